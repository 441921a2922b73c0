"""``s3ckpt`` on sharded checkpoints (a ``<name>.ckpt/`` prefix of shards and one ``.metadata`` commit).

``verify`` checks every shard's stored checksum and that every shard the commit references exists and
is long enough; ``cp`` copies a whole checkpoint between S3 and a local folder, the commit last, so the
copy is a checkpoint only once complete; ``cleanup`` deletes shard objects that no commit references.
Which shards a commit references (and which writer's layout it is) is read by an installed plugin
(s3-checkpoint-io); without it, ``verify`` and ``cp`` take every object under the prefix and ``cleanup``
leaves committed checkpoints alone.

Shards may lie below the prefix, not only directly in it: ``S3StorageWriter(key_prefix_strategy=
"rank-hash")`` puts each rank's under ``<prefix>/<hh>/``. Names here are relative to the prefix
(``3f/__<save>_1_<token>.distcp``), as the commit names them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

from s3_utils import ObjectInfo, S3Store
from s3_utils.cli.console import Console, UsageError
from s3_utils.cli.formatting import human_size
from s3_utils.cli.integrity import Check
from s3_utils.cli.plugins import CommitSummary, commit_reader, load_plugins, sharded_plugin
from s3_utils.cli.stored_object import read_stored_object, stored_checks
from s3_utils.cli.urls import basename
from s3_utils.errors import S3NotFoundError
from s3_utils.local_files import file_replacing
from s3_utils.sharded import COMMIT_NAME, SHARD_SUFFIX, commit_url

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install s3-checkpoint-io"
STOCK_KIND = "torch DCP"
"""The kind a plugin gives checkpoints of torch's own writers (FileSystemWriter, FsspecWriter,
s3torchconnector)."""
_HASHED_SHARD = re.compile(r"[0-9a-f]{2}/[^/]+")


def is_sharded(store: S3Store, url: str) -> bool:
    """Whether ``url`` names a sharded checkpoint, committed or not: a prefix (not an object) holding a
    commit or shard objects (directly, or one ``<hh>/`` level down as the rank-hash layout puts them)."""
    if not url.endswith("/") and store.exists(url):
        return False
    prefix = url.rstrip("/")
    names = (info.url[len(prefix) + 1 :] for info in store.iter_objects(prefix + "/"))
    return any(name == COMMIT_NAME or _is_layout_shard(name) for name in names)


def is_local_sharded(path: Path) -> bool:
    """Whether ``path`` is a local folder holding a sharded checkpoint's commit."""
    return path.is_dir() and (path / COMMIT_NAME).is_file()


def layout_label(summary: CommitSummary) -> str:
    """How ``s3ckpt`` names a commit's layout: ``"torch DCP (stock)"``, ``"s3-checkpoint-io, save <id>"``.

    Args:
        summary: what a plugin read from the commit.
    """
    if summary.kind == STOCK_KIND:
        return f"{STOCK_KIND} (stock)"
    return f"{summary.kind}, save {summary.save_id}" if summary.save_id else summary.kind


@dataclass(frozen=True)
class CommitReading:
    """What an installed plugin read from a sharded checkpoint's commit.

    Attributes:
        plugin: the plugin's name.
        extents: ``{shard name relative to the prefix: bytes of it the checkpoint uses}``.
        layout: :func:`layout_label` of the commit; None when the plugin cannot tell.
    """

    plugin: str
    extents: dict[str, int]
    layout: str | None


def read_commit(commit: bytearray, url: str) -> CommitReading | None:
    """Read a commit with the installed plugin: its layout (where the plugin describes commits) and the
    shards it references. None without a plugin.

    Raises:
        Exception: what the plugin raises for bytes that are not a commit it understands.
    """
    plugins = load_plugins()
    reader = commit_reader(plugins)
    if reader is not None:
        summary = reader.describe_commit(commit, url)
        return CommitReading(reader.name, dict(summary.extents), layout_label(summary))
    plugin = sharded_plugin(plugins)
    if plugin is not None:
        return CommitReading(plugin.name, plugin.shard_extents(commit, url), None)
    return None


def _is_layout_shard(name: str) -> bool:
    return name.endswith(SHARD_SUFFIX) and ("/" not in name or _HASHED_SHARD.fullmatch(name) is not None)


def _objects_under(store: S3Store, prefix: str) -> dict[str, ObjectInfo]:
    """Every object under ``prefix`` (no trailing ``/``), at any depth, by its name relative to it."""
    return {info.url[len(prefix) + 1 :]: info for info in store.iter_objects(prefix + "/")}


def _checked_name(name: str, commit: str) -> str:
    """``name`` if it is a plain relative path inside the checkpoint (no ``..``, not absolute).

    Raises:
        UsageError: naming the commit and the name, so a hostile commit cannot make ``cp`` write or read
            outside the checkpoint.
    """
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or "\\" in name or any(part in ("", ".", "..") for part in parts):
        raise UsageError(
            f"{commit} references {name!r}, which is not a path inside the checkpoint: refusing to copy it"
        )
    return name


def _read_commit_at(store: S3Store, prefix: str) -> tuple[bytearray, CommitReading | None]:
    """The commit's bytes (one GET) and what the plugin read from them (None without a plugin)."""
    data = store.download_bytes(commit_url(prefix))
    return data, read_commit(data, commit_url(prefix))


# -- verify -----------------------------------------------------------------------------------------


def verify_sharded(store: S3Store, url: str, console: Console) -> list[Check]:
    """Check a sharded checkpoint: the commit, its layout, the shards it references, every checksum.

    Args:
        store: where it is.
        url: its prefix URL (with or without ``/``).
        console: for progress bars.

    Returns:
        The checks, in the order they ran (``ok`` None: not checked).
    """
    prefix = url.rstrip("/")
    listed = _objects_under(store, prefix)
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
    checks, commit = _object_checks(store, prefix, COMMIT_NAME, console)
    try:
        reading = read_commit(commit, commit_url(prefix))
    except Exception as exc:
        return [*checks, Check("references", False, f"{type(exc).__name__}: {exc}")]
    if reading is None:
        checks.append(Check("references", None, f"not checked: install s3-checkpoint-io ({INSTALL_HINT})"))
        names = sorted(name for name in listed if name != COMMIT_NAME)
    else:
        if reading.layout is not None:
            checks.append(Check("layout", True, reading.layout))
        checks.append(_reference_check(reading.extents, listed))
        names = sorted(name for name in reading.extents if name in listed)
        unreferenced = len(listed) - 1 - len(names)
        if unreferenced:
            console.note(
                f"{unreferenced} objects under {prefix}/ are unreferenced (`s3ckpt cleanup` removes them)"
            )
    for name in names:
        checks.extend(_object_checks(store, prefix, name, console)[0])
    return checks


def _reference_check(extents: dict[str, int], listed: dict[str, ObjectInfo]) -> Check:
    missing = sorted(name for name in extents if name not in listed)
    short = sorted(name for name, end in extents.items() if name in listed and listed[name].size < end)
    if missing or short:
        return Check("references", False, f"missing shards {missing}, shards shorter than referenced {short}")
    return Check("references", True, f"all {len(extents)} shards the commit references exist, full length")


def _object_checks(store: S3Store, prefix: str, name: str, console: Console) -> tuple[list[Check], bytearray]:
    """One object's size and stored checksum (or ETag when none is stored), named by ``name``; and its
    bytes."""
    url = f"{prefix}/{name}"
    stored_object = read_stored_object(store, url)
    size = stored_object.size
    with console.progress_bar(name, size) as progress:
        data = store.download_bytes(url)
        progress.update(len(data))
    checks = [Check("size", len(data) == size, f"{name}: {len(data)} bytes read, {size} stored")]
    stored = stored_checks(data, stored_object)[-1]
    checks.append(Check(stored.name, stored.ok, f"{name}: {stored.detail}"))
    return checks, data


# -- cp ---------------------------------------------------------------------------------------------


def download_sharded(store: S3Store, src: str, dst: Path, console: Console, into: bool) -> Path:
    """Copy the sharded checkpoint ``src`` into the local folder ``dst``: shards first, the commit last.

    With the plugin, exactly the shards the commit references are copied (in their sub-folders, as the
    rank-hash layout has them), then the very commit bytes that named them; without it, every object
    under the prefix. Each file is written to a temporary name and renamed when complete, so the
    folder holds a commit only when every shard is there: it is then a folder torch's
    ``FileSystemReader`` loads.

    Args:
        store: where ``src`` is.
        src: the checkpoint's prefix URL.
        dst: the local folder to create (or, with ``into``, the folder to create it in).
        console: for progress and the summary line.
        into: put the checkpoint inside ``dst`` under its own name.

    Returns:
        The folder written.

    Raises:
        S3NotFoundError: if ``src`` holds no commit, or a shard its commit references is missing
            (nothing is copied then).
        UsageError: if the plugin cannot read the commit, or the commit names a path outside the
            checkpoint.
    """
    prefix = src.rstrip("/")
    target = dst / basename(prefix) if into else dst
    listed = _objects_under(store, prefix)
    if COMMIT_NAME not in listed:
        raise S3NotFoundError(
            f"{prefix}/ holds no {COMMIT_NAME} commit: it is not a checkpoint, nothing copied"
        )
    commit, reading = _read_commit_or_explain(store, prefix)
    names = (
        sorted(name for name in listed if name != COMMIT_NAME) if reading is None else sorted(reading.extents)
    )
    for name in names:
        _checked_name(name, commit_url(prefix))
    missing = [name for name in names if name not in listed]
    if missing:
        raise S3NotFoundError(
            f"{commit_url(prefix)} references shards that are not under {prefix}/: {missing}; the "
            "checkpoint is incomplete (deleted meanwhile?), nothing copied"
        )
    target.mkdir(parents=True, exist_ok=True)
    total = sum(listed[name].size for name in names) + len(commit)
    with console.progress_bar(basename(prefix), total) as progress:
        for name in names:
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            store.download_file(f"{prefix}/{name}", path, progress.update)
        _write_whole(target / COMMIT_NAME, commit)
        progress.update(len(commit))
    console.print(f"downloaded {prefix}/ -> {target}/ ({len(names) + 1} objects, {human_size(total)})")
    return target


def _read_commit_or_explain(store: S3Store, prefix: str) -> tuple[bytearray, CommitReading | None]:
    try:
        return _read_commit_at(store, prefix)
    except S3NotFoundError:
        raise
    except Exception as exc:
        raise UsageError(f"{commit_url(prefix)}: {exc}; nothing copied") from exc


def _write_whole(path: Path, data: bytearray) -> None:
    """Write ``path`` through a temporary file beside it, renamed over it once complete."""
    with file_replacing(path) as fd, os.fdopen(fd, "wb", closefd=False) as out:
        out.write(data)


def upload_sharded(store: S3Store, src: Path, dst: str, console: Console) -> str:
    """Copy the local sharded checkpoint folder ``src`` to ``dst``: shards first, the commit last.

    Each object is one complete upload (a failure aborts it), and the commit is uploaded only after
    every shard, so ``dst`` becomes a checkpoint in one step. A checkpoint already at ``dst`` stays
    readable until then; its shards become unreferenced (``s3ckpt cleanup`` removes them). With the
    plugin, the local ``.metadata`` is read first: every shard it references must be there, at least
    as long as it says, and exactly those are uploaded (sub-folders included); without it, every file
    under ``src``.

    Returns:
        The checkpoint's prefix URL.

    Raises:
        FileNotFoundError: if a shard the local commit references is missing or short (nothing is
            uploaded then).
        UsageError: if the plugin cannot read the local commit, or it names a path outside the folder.
    """
    prefix = (dst + src.name if dst.endswith("/") else dst).rstrip("/")
    commit_path = src / COMMIT_NAME
    commit = bytearray(commit_path.read_bytes())
    try:
        reading = read_commit(commit, str(commit_path))
    except Exception as exc:
        raise UsageError(f"{commit_path}: {exc}; nothing uploaded") from exc
    if reading is None:
        names = sorted(
            path.relative_to(src).as_posix()
            for path in src.rglob("*")
            if path.is_file() and path != commit_path
        )
    else:
        names = sorted(_checked_name(name, str(commit_path)) for name in reading.extents)
        _require_local_shards(src, reading.extents)
    total = sum((src / name).stat().st_size for name in names) + len(commit)
    with console.progress_bar(src.name, total) as progress:
        for name in names:
            store.upload_file(src / name, f"{prefix}/{name}", progress.update)
        store.upload_bytes(f"{prefix}/{COMMIT_NAME}", commit, progress.update)
    console.print(f"uploaded {src}/ -> {prefix}/ ({len(names) + 1} objects, {human_size(total)})")
    return prefix


def _require_local_shards(src: Path, extents: dict[str, int]) -> None:
    missing = sorted(name for name in extents if not (src / name).is_file())
    short = sorted(
        name for name, end in extents.items() if (src / name).is_file() and (src / name).stat().st_size < end
    )
    if missing or short:
        raise FileNotFoundError(
            f"{src}/ is not a whole checkpoint: its {COMMIT_NAME} references "
            + "; ".join(
                part
                for part in (
                    f"shards that are not there: {missing}" if missing else "",
                    f"shards shorter than it says: {short}" if short else "",
                )
                if part
            )
            + "; nothing uploaded (copy the missing shards into the folder first)"
        )


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
    name belong to an older or failed save. A shard in a ``<hh>/`` sub-folder of a committed prefix (the
    rank-hash layout) belongs to that prefix's checkpoint. The age keeps a save still in progress safe,
    and a prefix whose commit appeared since the listing is skipped.

    Args:
        store: where to clean.
        url: a prefix (a run's dirpath or one checkpoint).
        older_than: only shards last modified longer ago than this.

    Returns:
        What was removed and which committed checkpoints could not be checked.
    """
    commits: set[str] = set()
    found: list[ObjectInfo] = []
    for info in store.iter_objects(url):
        parent, _, name = info.url.rpartition("/")
        if name == COMMIT_NAME:
            commits.add(parent)
        elif name.endswith(SHARD_SUFFIX):
            found.append(info)
    shards: dict[str, list[ObjectInfo]] = {}
    for info in found:
        shards.setdefault(_owner(info.url, commits), []).append(info)
    cutoff = datetime.now(UTC) - older_than
    result = ShardCleanup()
    for owner, owned in sorted(shards.items()):
        old = [info for info in owned if info.last_modified is not None and info.last_modified < cutoff]
        if not old:
            continue
        if owner in commits:
            reading = _read_commit_at(store, owner)[1]
            if reading is None:
                result.skipped.append(owner)
                continue
            garbage = [info for info in old if info.url[len(owner) + 1 :] not in reading.extents]
        elif any(store.exists(commit_url(candidate)) for candidate in _candidate_owners(old[0].url)):
            continue  # committed since the listing: leave it to the next run
        else:
            garbage = old
        _delete(store, garbage, result)
    return result


def _candidate_owners(shard_url: str) -> list[str]:
    """The prefixes a shard can belong to: its folder, and the one above a ``<hh>/`` folder."""
    parent = shard_url.rpartition("/")[0]
    grandparent, _, folder = parent.rpartition("/")
    hashed = re.fullmatch(r"[0-9a-f]{2}", folder) is not None and "/" in grandparent.removeprefix("s3://")
    return [parent, grandparent] if hashed else [parent]


def _owner(shard_url: str, commits: set[str]) -> str:
    """The checkpoint prefix a shard belongs to: the nearest committed candidate, else its folder's
    rank-hash parent, else its folder."""
    candidates = _candidate_owners(shard_url)
    for candidate in candidates:
        if candidate in commits:
            return candidate
    return candidates[-1]


def _delete(store: S3Store, garbage: Iterable[ObjectInfo], result: ShardCleanup) -> None:
    for info in garbage:
        store.delete(info.url)
        log.info("removed unreferenced shard %s", info.url)
        result.removed += 1
        result.bytes_removed += info.size
