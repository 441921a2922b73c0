"""What a checkpoint's name says, and which of several checkpoints a resume picks: the one rule.

Used by ``S3ModelCheckpoint`` (Lightning's ``ckpt_path="last"``), the NeMo resume discovery and
``s3ckpt ls``, so all three always agree. The rule, in order:

0. a sharded checkpoint (a ``<name>.ckpt/`` prefix of torch.distributed.checkpoint shards) counts as one
   checkpoint, named by its prefix and dated by its commit (``.metadata``), and only once committed
   (:func:`as_checkpoints`);
1. ``*end.ckpt`` (a finished run) before ``*last.ckpt`` (:func:`choose_resume_checkpoint` only; Lightning's
   ``"last"`` looks at last checkpoints alone);
2. a checkpoint with an ``-unfinished`` marker beside it is never picked;
3. among the rest, the newest: the highest ``step=<n>`` in the name, then the highest ``epoch=<n>``,
   then the latest ``LastModified`` (as NeMo does on local disk, with the file's mtime), then the name
   (so the choice is deterministic). A name without a step or epoch counts as -1 there.

Steps and epochs come from the names because they survive a copy between buckets; the modification
time only breaks ties (NeMo's default name, ``{name}--{val_loss:.4f}-{epoch}``, carries no step).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from s3_utils.sharded import checkpoint_of_commit

_STEP = re.compile(r"step=(\d+)")
_EPOCH = re.compile(r"epoch=(\d+)")
_PREFIX_WITH_STEP = re.compile(r"^(.*?step=\d+-)")
UNFINISHED_SUFFIX = "-unfinished"
"""NeMo's marker: ``<checkpoint>-unfinished`` (or ``<stem>-unfinished``) exists while a save is running."""
END_SUFFIX = "end.ckpt"
LAST_SUFFIX = "last.ckpt"


class Listed(Protocol):
    """What the rule needs of a listed checkpoint (``s3_utils.ObjectInfo`` has both)."""

    @property
    def url(self) -> str:
        """The checkpoint's key, URL or name; only the part after the last ``/`` is read."""
        ...

    @property
    def last_modified(self) -> datetime | None:
        """When it was written (None when unknown: it then loses ties)."""
        ...


L = TypeVar("L", bound=Listed)
T = TypeVar("T")


@dataclass(frozen=True)
class NamedCheckpoint:
    """A checkpoint known by name (and maybe time) only, for callers without an ``ObjectInfo``."""

    url: str
    last_modified: datetime | None = None


@dataclass(frozen=True)
class ResumeChoice(Generic[T]):
    """The checkpoint a resume picks, and why (for logs and ``s3ckpt ls``).

    Attributes:
        checkpoint: the chosen entry, as given.
        reason: a short phrase: ``highest step``, ``highest epoch``, ``newest LastModified``, ...
    """

    checkpoint: T
    reason: str


def step_from_name(name: str) -> int | None:
    """The training step written in a checkpoint name (the last ``step=<n>``), or None."""
    found = _STEP.findall(_base_name(name))
    return int(found[-1]) if found else None


def epoch_from_name(name: str) -> int | None:
    """The epoch written in a checkpoint name (the last ``epoch=<n>``), or None."""
    found = _EPOCH.findall(_base_name(name))
    return int(found[-1]) if found else None


def parse_prefix_with_step(path: str) -> str:
    """The part of a checkpoint path up to and including ``step=<n>-``.

    ``s3://b/ckpt/gpt--step=900-val_loss=6.47-last.ckpt`` gives ``s3://b/ckpt/gpt--step=900-``: every
    checkpoint of the same step shares it, which is how a stale same-step ``-last`` checkpoint is found.

    Raises:
        ValueError: if the name has no ``step=<n>-`` part.
    """
    match = _PREFIX_WITH_STEP.match(path)
    if match is None:
        raise ValueError(
            f"checkpoint path {path!r} has no 'step=<n>-' part; name checkpoints with "
            "ModelCheckpoint(filename='{step}-...') to use same-step clean-up"
        )
    return match.group(1)


def unfinished_names(names: Iterable[str]) -> set[str]:
    """The checkpoint names (or URLs) among ``names`` that an ``-unfinished`` marker marks as incomplete.

    A marker ``<x>-unfinished`` marks both ``<x>`` and ``<x>.ckpt`` (NeMo writes ``<stem>-unfinished``).
    """
    markers = {n[: -len(UNFINISHED_SUFFIX)] for n in names if n.endswith(UNFINISHED_SUFFIX)}
    return markers | {f"{m}.ckpt" for m in markers}


def is_unfinished_marker(name: str) -> bool:
    """Whether ``name`` is an ``-unfinished`` marker itself (not a checkpoint)."""
    return name.endswith(UNFINISHED_SUFFIX)


def newest_checkpoint(entries: Iterable[L]) -> ResumeChoice[L] | None:
    """The newest of ``entries`` by step, then epoch, then LastModified, then name (rule 3 above).

    Args:
        entries: candidates already filtered (kind, unfinished markers).

    Returns:
        The newest and why it won, or None when ``entries`` is empty.
    """
    ranked = sorted(entries, key=_newness, reverse=True)
    if not ranked:
        return None
    return ResumeChoice(ranked[0], _why(ranked))


def as_checkpoints(entries: Iterable[L]) -> list[L | NamedCheckpoint]:
    """The checkpoints in a listing: each object stands for itself, except a sharded checkpoint's commit.

    The commit ``<x>/.metadata`` stands for the whole sharded checkpoint ``<x>`` (a
    :class:`NamedCheckpoint` dated by the commit, which is written last). A sharded save that never
    committed yields no checkpoint: its shard objects' names match no checkpoint name.

    Args:
        entries: a listing (objects with ``url`` and ``last_modified``), flat or recursive.

    Returns:
        The entries, with every commit replaced by the checkpoint it commits.
    """
    found: list[L | NamedCheckpoint] = []
    for entry in entries:
        sharded = checkpoint_of_commit(entry.url)
        found.append(entry if sharded is None else NamedCheckpoint(sharded, entry.last_modified))
    return found


def choose_resume_checkpoint(entries: Iterable[L]) -> ResumeChoice[L | NamedCheckpoint] | None:
    """Pick the checkpoint a resume should load from one listing of a checkpoint dirpath.

    Committed sharded checkpoints count as one checkpoint each (:func:`as_checkpoints`). ``*end.ckpt``
    wins over ``*last.ckpt``; checkpoints with an ``-unfinished`` marker in the same listing
    are skipped; among the rest :func:`newest_checkpoint` decides.

    Args:
        entries: everything listed under the dirpath (objects with ``url`` and ``last_modified``).

    Returns:
        The choice and its reason, or None when no finished end or last checkpoint is there.
    """
    listed = as_checkpoints(entries)
    unfinished = unfinished_names(e.url for e in listed)
    for suffix in (END_SUFFIX, LAST_SUFFIX):
        kind = [e for e in listed if e.url.endswith(suffix) and e.url not in unfinished]
        choice = newest_checkpoint(kind)
        if choice is not None:
            if suffix == END_SUFFIX:
                return ResumeChoice(choice.checkpoint, f"*{END_SUFFIX}: the run finished; {choice.reason}")
            return choice
    return None


def _base_name(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def _newness(entry: Listed) -> tuple[int, int, float, str]:
    step, epoch = step_from_name(entry.url), epoch_from_name(entry.url)
    modified = entry.last_modified.timestamp() if entry.last_modified is not None else float("-inf")
    return (-1 if step is None else step, -1 if epoch is None else epoch, modified, entry.url)


def _why(ranked: Sequence[Listed]) -> str:
    if len(ranked) == 1:
        return "the only candidate"
    first, second = _newness(ranked[0]), _newness(ranked[1])
    for index, reason in enumerate(("highest step", "highest epoch", "newest LastModified")):
        if first[index] != second[index]:
            return reason
    return "same step, epoch and time: last name in sort order"
