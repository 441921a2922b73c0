"""``s3ckpt`` on sharded checkpoints (a ``<name>.ckpt/`` prefix of shards and one ``.metadata`` commit).

``verify`` checks every shard's stored checksum and that every shard the commit references exists and
is long enough; ``cp`` copies a whole checkpoint between S3 and a local folder, the commit last, so the
copy is a checkpoint only once complete; ``cleanup`` deletes shard objects that no commit references.
Which shards a commit references is read by an installed plugin (s3-checkpoint-io); without it,
``verify`` checks every object under the prefix and ``cleanup`` leaves committed checkpoints alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from s3_utils import ObjectInfo, S3Store
from s3_utils.cli.console import Console
from s3_utils.cli.formatting import human_size
from s3_utils.cli.integrity import Check
from s3_utils.cli.plugins import ShardedCheckpointPlugin, load_plugins, sharded_plugin
from s3_utils.cli.stored_object import read_stored_object, stored_checks
from s3_utils.cli.urls import basename
from s3_utils.errors import S3NotFoundError
from s3_utils.sharded import COMMIT_NAME, SHARD_SUFFIX, commit_url

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install s3-checkpoint-io"


def is_sharded(store: S3Store, url: str) -> bool:
    """Whether ``url`` names a sharded checkpoint, committed or not: a prefix (not an object) holding a
    commit or shard objects."""
    if not url.endswith("/") and store.exists(url):
        return False
    prefix = url.rstrip("/")
    return any(name == COMMIT_NAME or name.endswith(SHARD_SUFFIX) for name in _direct_objects(store, prefix))


def is_local_sharded(path: Path) -> bool:
    """Whether ``path`` is a local folder holding a sharded checkpoint's commit."""
    return path.is_dir() and (path / COMMIT_NAME).is_file()


def _direct_objects(store: S3Store, prefix: str) -> dict[str, ObjectInfo]:
    """The objects directly under ``prefix`` (no trailing ``/``), by name."""
    found = {}
    for info in store.iter_objects(prefix + "/"):
        name = info.url[len(prefix) + 1 :]
        if "/" not in name:
            found[name] = info
    return found


def _references(plugin: ShardedCheckpointPlugin, store: S3Store, prefix: str) -> dict[str, int]:
    return plugin.shard_extents(store.download_bytes(commit_url(prefix)), commit_url(prefix))


# -- verify -----------------------------------------------------------------------------------------


def verify_sharded(store: S3Store, url: str, console: Console) -> list[Check]:
    """Check a sharded checkpoint: the commit, the shards it references, every shard's checksum.

    Args:
        store: where it is.
        url: its prefix URL (with or without ``/``).
        console: for progress bars.

    Returns:
        The checks, in the order they ran (``ok`` None: not checked).
    """
    prefix = url.rstrip("/")
    listed = _direct_objects(store, prefix)
    if COMMIT_NAME not in listed:
        shards = sum(name.endswith(SHARD_SUFFIX) for name in listed)
        return [
            Check(
                "commit",
                False,
                f"no {COMMIT_NAME} under {prefix}/ ({shards} shard objects): the save never committed, so "
                "this is not a checkpoint; `s3ckpt cleanup` removes its shards",
            )
        ]
    checks = _object_checks(store, f"{prefix}/{COMMIT_NAME}", console)
    plugin = sharded_plugin(load_plugins())
    if plugin is None:
        checks.append(Check("references", None, f"not checked: install s3-checkpoint-io ({INSTALL_HINT})"))
        names = sorted(name for name in listed if name != COMMIT_NAME)
    else:
        try:
            extents = _references(plugin, store, prefix)
        except Exception as exc:
            return [*checks, Check("references", False, f"{plugin.name}: {type(exc).__name__}: {exc}")]
        checks.append(_reference_check(extents, listed))
        names = sorted(name for name in extents if name in listed)
        unreferenced = len(listed) - 1 - len(names)
        if unreferenced:
            console.note(
                f"{unreferenced} objects under {prefix}/ are unreferenced (`s3ckpt cleanup` removes them)"
            )
    for name in names:
        checks.extend(_object_checks(store, f"{prefix}/{name}", console))
    return checks


def _reference_check(extents: dict[str, int], listed: dict[str, ObjectInfo]) -> Check:
    missing = sorted(name for name in extents if name not in listed)
    short = sorted(name for name, end in extents.items() if name in listed and listed[name].size < end)
    if missing or short:
        return Check("references", False, f"missing shards {missing}, shards shorter than referenced {short}")
    return Check("references", True, f"all {len(extents)} shards the commit references exist, full length")


def _object_checks(store: S3Store, url: str, console: Console) -> list[Check]:
    """One object's size and stored checksum (or ETag when no checksum is stored), named by its name."""
    name = basename(url)
    stored_object = read_stored_object(store, url)
    size = stored_object.size
    with console.progress_bar(name, size) as progress:
        data = store.download_bytes(url)
        progress.update(len(data))
    checks = [Check("size", len(data) == size, f"{name}: {len(data)} bytes read, {size} stored")]
    stored = stored_checks(data, stored_object)[-1]
    checks.append(Check(stored.name, stored.ok, f"{name}: {stored.detail}"))
    return checks


# -- cp ---------------------------------------------------------------------------------------------


def download_sharded(store: S3Store, src: str, dst: Path, console: Console, into: bool) -> Path:
    """Copy the sharded checkpoint ``src`` into the local folder ``dst``: shards first, the commit last.

    Each file is written to a temporary name and renamed when complete, so the folder holds a commit
    only when every shard is there.

    Args:
        store: where ``src`` is.
        src: the checkpoint's prefix URL.
        dst: the local folder to create (or, with ``into``, the folder to create it in).
        console: for progress and the summary line.
        into: put the checkpoint inside ``dst`` under its own name.

    Returns:
        The folder written.

    Raises:
        S3NotFoundError: if ``src`` holds no commit.
    """
    prefix = src.rstrip("/")
    target = dst / basename(prefix) if into else dst
    listed = _direct_objects(store, prefix)
    if COMMIT_NAME not in listed:
        raise S3NotFoundError(
            f"{prefix}/ holds no {COMMIT_NAME} commit: it is not a checkpoint, nothing copied"
        )
    plugin = sharded_plugin(load_plugins())
    names = sorted(_references(plugin, store, prefix)) if plugin else sorted(listed)
    names = [name for name in names if name != COMMIT_NAME] + [COMMIT_NAME]
    target.mkdir(parents=True, exist_ok=True)
    total = sum(listed[name].size for name in names)
    with console.progress_bar(basename(prefix), total) as progress:
        for name in names:
            store.download_file(f"{prefix}/{name}", target / name)
            progress.update(listed[name].size)
    console.print(f"downloaded {prefix}/ -> {target}/ ({len(names)} objects, {human_size(total)})")
    return target


def upload_sharded(store: S3Store, src: Path, dst: str, console: Console) -> str:
    """Copy the local sharded checkpoint folder ``src`` to ``dst``: shards first, the commit last.

    Each object is one complete upload (a failure aborts it), and the commit is uploaded only after
    every shard, so ``dst`` becomes a checkpoint in one step. A checkpoint already at ``dst`` stays
    readable until then; its shards become unreferenced (``s3ckpt cleanup`` removes them).

    Returns:
        The checkpoint's prefix URL.
    """
    prefix = (dst + src.name if dst.endswith("/") else dst).rstrip("/")
    files = sorted(path for path in src.iterdir() if path.is_file() and path.name != COMMIT_NAME)
    files.append(src / COMMIT_NAME)
    total = sum(path.stat().st_size for path in files)
    with console.progress_bar(src.name, total) as progress:
        for path in files:
            store.upload_file(path, f"{prefix}/{path.name}")
            progress.update(path.stat().st_size)
    console.print(f"uploaded {src}/ -> {prefix}/ ({len(files)} objects, {human_size(total)})")
    return prefix


# -- cleanup ----------------------------------------------------------------------------------------


@dataclass
class ShardCleanup:
    """What :func:`remove_unreferenced_shards` did.

    Attributes:
        removed: shard objects deleted.
        bytes_removed: their total size.
        skipped: committed checkpoints left alone (no plugin to read their commits).
    """

    removed: int = 0
    bytes_removed: int = 0
    skipped: list[str] = field(default_factory=list)


def remove_unreferenced_shards(store: S3Store, url: str, older_than: timedelta) -> ShardCleanup:
    """Delete shard objects under ``url`` that no commit references and that are older than ``older_than``.

    Shards of a prefix without a commit belong to a save that never finished; shards a commit does not
    name belong to an older or failed save. The age keeps a save still in progress safe, and a prefix
    whose commit appeared since the listing is skipped.

    Args:
        store: where to clean.
        url: a prefix (a run's dirpath or one checkpoint).
        older_than: only shards last modified longer ago than this.

    Returns:
        What was removed and which committed checkpoints could not be checked.
    """
    commits: set[str] = set()
    shards: dict[str, list[ObjectInfo]] = {}
    for info in store.iter_objects(url):
        parent, _, name = info.url.rpartition("/")
        if name == COMMIT_NAME:
            commits.add(parent)
        elif name.endswith(SHARD_SUFFIX):
            shards.setdefault(parent, []).append(info)
    cutoff = datetime.now(UTC) - older_than
    plugin = sharded_plugin(load_plugins())
    result = ShardCleanup()
    for parent, found in sorted(shards.items()):
        old = [info for info in found if info.last_modified is not None and info.last_modified < cutoff]
        if not old:
            continue
        if parent in commits:
            if plugin is None:
                result.skipped.append(parent)
                continue
            referenced = _references(plugin, store, parent)
            garbage = [info for info in old if basename(info.url) not in referenced]
        elif store.exists(commit_url(parent)):  # committed since the listing: leave it to the next run
            continue
        else:
            garbage = old
        _delete(store, garbage, result)
    return result


def _delete(store: S3Store, garbage: Iterable[ObjectInfo], result: ShardCleanup) -> None:
    for info in garbage:
        store.delete(info.url)
        log.info("removed unreferenced shard %s", info.url)
        result.removed += 1
        result.bytes_removed += info.size
