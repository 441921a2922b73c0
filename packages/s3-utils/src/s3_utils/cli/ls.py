"""``s3ckpt ls URL``: the checkpoints under a dirpath, and which one a resume would load."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from s3_utils import ObjectInfo
from s3_utils.checkpoint_names import (
    NamedCheckpoint,
    ResumeChoice,
    choose_resume_checkpoint,
    is_unfinished_marker,
    step_from_name,
    unfinished_names,
)
from s3_utils.cli import exit_codes, tensors
from s3_utils.cli.console import Console
from s3_utils.cli.formatting import human_size, utc_time
from s3_utils.cli.store import open_store
from s3_utils.cli.urls import as_prefix, s3_url
from s3_utils.errors import S3NotFoundError
from s3_utils.sharded import COMMIT_NAME, SHARD_SUFFIX, checkpoint_of_commit

HELP = "list checkpoints under a dirpath: size, time, age, step, and what a resume would load and why"


@dataclass(frozen=True)
class Entry:
    """One checkpoint under the listed dirpath: an object, or a folder of objects (sharded checkpoint).

    Attributes:
        name: the name below the dirpath (a folder's name without the trailing ``/``).
        url: the full ``s3://`` URL (a folder's with its trailing ``/``).
        size: bytes (a folder: all objects under it).
        modified: last modification (a folder: its newest object).
        objects: 1 for an object, the object count for a folder.
        is_folder: whether this is a folder of objects.
        committed: for a folder, whether it is a committed sharded checkpoint (holds the commit object
            directly); only such folders are checkpoints a resume may pick.
        sharded: for a folder, whether it holds sharded-checkpoint objects (shards or the commit).
    """

    name: str
    url: str
    size: int
    modified: datetime | None
    objects: int
    is_folder: bool
    committed: bool = False
    sharded: bool = False

    @property
    def step(self) -> int | None:
        """The training step in the name, if any."""
        return step_from_name(self.name)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``ls`` on the subcommand parser."""
    parser = sub.add_parser("ls", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    parser.add_argument("url", metavar="URL", help="the checkpoint dirpath, e.g. s3://bucket/run/checkpoints")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--tensors",
        action="store_true",
        help="list one checkpoint's tensors (name, dtype, shape, bytes) from its metadata, without "
        "downloading it (needs s3-checkpoint-io)",
    )
    parser.set_defaults(run=run)


def group_entries(prefix_url: str, objects: Iterable[ObjectInfo]) -> list[Entry]:
    """Group the objects under ``prefix_url`` into checkpoints: direct objects, and first-level folders.

    Args:
        prefix_url: the listed dirpath, ending in ``/``.
        objects: every object under it.

    Returns:
        The entries, sorted by step then name.
    """
    files: list[Entry] = []
    folders: dict[str, list[ObjectInfo]] = {}
    for info in objects:
        relative = info.url[len(prefix_url) :]
        head, slash, _ = relative.partition("/")
        if slash:
            folders.setdefault(head, []).append(info)
        else:
            files.append(Entry(head, info.url, info.size, info.last_modified, 1, False))
    for name, members in folders.items():
        files.append(
            Entry(
                name=name,
                url=prefix_url + name + "/",
                size=sum(m.size for m in members),
                modified=max((m.last_modified for m in members if m.last_modified), default=None),
                objects=len(members),
                is_folder=True,
                committed=any(checkpoint_of_commit(m.url) == prefix_url + name for m in members),
                sharded=any(m.url.endswith(SHARD_SUFFIX) or m.url.endswith(COMMIT_NAME) for m in members),
            )
        )
    return sorted(files, key=lambda e: (-1 if e.step is None else e.step, e.name))


def resume_candidates(entries: Iterable[Entry]) -> Iterator[NamedCheckpoint]:
    """What a resume may pick among ``entries``: every object, and every committed sharded checkpoint
    (given as its commit, which :func:`choose_resume_checkpoint` reads as the whole checkpoint)."""
    for entry in entries:
        if not entry.is_folder:
            yield NamedCheckpoint(entry.name, entry.modified)
        elif entry.committed:
            yield NamedCheckpoint(f"{entry.name}/{COMMIT_NAME}", entry.modified)


def run(args: argparse.Namespace, console: Console) -> int:
    """List the dirpath (or the one object URL names); exit code 3 when nothing is there."""
    if args.tensors:
        return tensors.run(args, console)
    url = s3_url(args.url)
    prefix = as_prefix(url)
    with open_store(args) as store:
        entries = group_entries(prefix, store.iter_objects(prefix))
        if not entries and not url.endswith("/") and store.exists(url):
            prefix = url.rsplit("/", 1)[0] + "/"
            entries = [e for e in group_entries(prefix, [store.head(url)]) if e.url == url]
    if not entries:
        raise S3NotFoundError(f"nothing under {prefix}; check the bucket and the dirpath")
    choice = choose_resume_checkpoint(resume_candidates(entries))
    resume = None if choice is None else choice.checkpoint.url
    if args.json:
        console.print(json.dumps(_as_json(prefix, entries, choice), indent=2))
        return exit_codes.OK
    unfinished = unfinished_names(e.name for e in entries)
    now = datetime.now(UTC)
    console.print(f"{'':2}{'SIZE':>10}  {'MODIFIED (UTC)':<19}  {'AGE':>5}  {'STEP':>8}  NAME")
    for entry in entries:
        mark = "* " if entry.name == resume else "  "
        step = "-" if entry.step is None else str(entry.step)
        console.print(
            f"{mark}{human_size(entry.size):>10}  {_time(entry.modified):<19}  "
            f"{_age(entry.modified, now):>5}  {step:>8}  "
            f"{entry.name}{'/' if entry.is_folder else ''}{_note(entry, unfinished)}"
        )
    total = sum(e.size for e in entries)
    console.print(f"{len(entries)} entries, {human_size(total)} under {prefix}")
    if choice is None:
        console.print("resume: none (no *last.ckpt or *end.ckpt here); training would start from scratch")
    else:
        console.print(f"resume would pick {choice.checkpoint.url}: {choice.reason}")
        console.print(f"resume: {prefix}{choice.checkpoint.url}")
    return exit_codes.OK


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else utc_time(moment)


def _age(moment: datetime | None, now: datetime) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``: how long ago ``moment`` was (``-`` when unknown)."""
    if moment is None:
        return "-"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _note(entry: Entry, unfinished: set[str]) -> str:
    notes = []
    if entry.is_folder:
        notes.append(f"{entry.objects} objects")
        if entry.committed:
            notes.append("sharded checkpoint, committed")
        elif entry.sharded:
            notes.append("sharded save without a commit: unfinished, never resumed from")
    if is_unfinished_marker(entry.name):
        notes.append("marker: save in progress or interrupted")
    elif entry.name in unfinished:
        notes.append("unfinished, never resumed from")
    return f"  ({'; '.join(notes)})" if notes else ""


def _as_json(
    prefix: str, entries: list[Entry], choice: ResumeChoice[NamedCheckpoint] | None
) -> dict[str, object]:
    return {
        "dirpath": prefix,
        "resume": None if choice is None else prefix + choice.checkpoint.url,
        "resume_reason": None if choice is None else choice.reason,
        "checkpoints": [
            {
                "name": e.name,
                "url": e.url,
                "size": e.size,
                "modified": None if e.modified is None else e.modified.isoformat(),
                "step": e.step,
                "objects": e.objects,
                "folder": e.is_folder,
                "committed": e.committed,
            }
            for e in entries
        ],
    }
