"""What a checkpoint's name says: its step, and which of several a resume should pick.

Pure functions over keys or URLs, so the rules are the same in the CLI, in S3CheckpointIO and in the
NeMo resume discovery. The step is read from the name (``...step=<n>...``), never from a modification
time: times change when checkpoints are copied between buckets, names do not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_STEP = re.compile(r"step=(\d+)")
_PREFIX_WITH_STEP = re.compile(r"^(.*?step=\d+-)")
UNFINISHED_SUFFIX = "-unfinished"


def step_from_name(name: str) -> int | None:
    """The training step written in a checkpoint name (the last ``step=<n>``), or None."""
    found = _STEP.findall(name.rsplit("/", 1)[-1])
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


def _is_unfinished(name: str, names: set[str]) -> bool:
    stem = name[: -len(".ckpt")] if name.endswith(".ckpt") else name
    return f"{name}{UNFINISHED_SUFFIX}" in names or f"{stem}{UNFINISHED_SUFFIX}" in names


def choose_resume_checkpoint(names: Iterable[str]) -> str | None:
    """Pick the checkpoint a resume should load, by NeMo's rules, from keys or URLs.

    ``*end.ckpt`` (a finished run) wins over ``*last.ckpt``; among several of the same kind the highest
    step in the name wins (a name without a step counts as step -1; equal steps are broken by name, so
    the choice is deterministic). A checkpoint with an ``-unfinished`` marker beside it is skipped.
    Returns None when nothing qualifies.
    """
    all_names = set(names)
    for suffix in ("end.ckpt", "last.ckpt"):
        candidates = [n for n in all_names if n.endswith(suffix) and not _is_unfinished(n, all_names)]
        if candidates:
            return max(candidates, key=lambda n: (_step_or_minus_one(n), n))
    return None


def _step_or_minus_one(name: str) -> int:
    step = step_from_name(name)
    return -1 if step is None else step
