"""Step parsing and NeMo's resume choice, as properties over generated names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3_utils.checkpoint_names import choose_resume_checkpoint, parse_prefix_with_step, step_from_name

steps = st.integers(min_value=0, max_value=10**12)
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12)


@given(prefix=words, step=steps, suffix=words)
def test_step_is_read_back_from_any_name(prefix: str, step: int, suffix: str) -> None:
    assert step_from_name(f"s3://b/run/{prefix}--step={step}-{suffix}.ckpt") == step


@given(step_a=steps, step_b=steps)
def test_last_step_in_the_file_name_wins_and_directories_are_ignored(step_a: int, step_b: int) -> None:
    assert step_from_name(f"s3://b/step={step_a}/x-step={step_b}.ckpt") == step_b
    assert step_from_name(f"s3://b/step={step_a}/last.ckpt") is None


@given(prefix=words, step=steps, suffix=words)
def test_prefix_with_step_is_shared_by_every_checkpoint_of_the_step(
    prefix: str, step: int, suffix: str
) -> None:
    path = f"s3://b/ckpt/{prefix}--step={step}-{suffix}-last.ckpt"
    assert parse_prefix_with_step(path) == f"s3://b/ckpt/{prefix}--step={step}-"
    assert path.startswith(parse_prefix_with_step(path))


def test_prefix_without_step_says_how_to_name_checkpoints() -> None:
    with pytest.raises(ValueError, match=r"no 'step=<n>-' part.*ModelCheckpoint"):
        parse_prefix_with_step("s3://b/ckpt/model-last.ckpt")


@given(last_steps=st.lists(steps, min_size=1, max_size=6, unique=True), end=st.booleans())
def test_resume_picks_end_then_highest_step_last(last_steps: list[int], end: bool) -> None:
    names = [f"m--step={s}-last.ckpt" for s in last_steps]
    if end:
        names.append("m--step=0-end.ckpt")
    expected = "m--step=0-end.ckpt" if end else f"m--step={max(last_steps)}-last.ckpt"
    assert choose_resume_checkpoint(names) == expected
    assert choose_resume_checkpoint(reversed(names)) == expected


def test_resume_skips_unfinished_checkpoints_and_handles_none() -> None:
    names = ["m--step=5-last.ckpt", "m--step=9-last.ckpt", "m--step=9-last-unfinished"]
    assert choose_resume_checkpoint(names) == "m--step=5-last.ckpt"
    assert choose_resume_checkpoint(["m--step=9-last.ckpt", "m--step=9-last.ckpt-unfinished"]) is None
    assert choose_resume_checkpoint([]) is None
    assert choose_resume_checkpoint(["notes.txt"]) is None
