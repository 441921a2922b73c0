"""Step parsing and the one resume rule (end before last, skip unfinished, step > epoch > time > name)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3_utils.checkpoint_names import (
    NamedCheckpoint,
    choose_resume_checkpoint,
    epoch_from_name,
    newest_checkpoint,
    parse_prefix_with_step,
    step_from_name,
)

steps = st.integers(min_value=0, max_value=10**12)
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def named(*names: str) -> list[NamedCheckpoint]:
    return [NamedCheckpoint(n) for n in names]


def chosen(entries: list[NamedCheckpoint]) -> str | None:
    choice = choose_resume_checkpoint(entries)
    return None if choice is None else choice.checkpoint.url


@given(prefix=words, step=steps, suffix=words)
def test_step_is_read_back_from_any_name(prefix: str, step: int, suffix: str) -> None:
    assert step_from_name(f"s3://b/run/{prefix}--step={step}-{suffix}.ckpt") == step


@given(step_a=steps, step_b=steps)
def test_last_step_in_the_file_name_wins_and_directories_are_ignored(step_a: int, step_b: int) -> None:
    assert step_from_name(f"s3://b/step={step_a}/x-step={step_b}.ckpt") == step_b
    assert step_from_name(f"s3://b/step={step_a}/last.ckpt") is None


@given(epoch=steps)
def test_epoch_is_read_back_from_nemos_default_name(epoch: int) -> None:
    assert epoch_from_name(f"s3://b/run/gpt--val_loss=0.1234-epoch={epoch}-last.ckpt") == epoch
    assert epoch_from_name("s3://b/run/gpt--step=3-last.ckpt") is None


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
    assert chosen(named(*names)) == expected
    assert chosen(named(*reversed(names))) == expected


@given(
    records=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 10**6)),
            st.one_of(st.none(), st.integers(0, 10**4)),
            st.integers(0, 10**6),
        ),
        min_size=1,
        max_size=8,
        unique=True,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_newest_wins_by_step_then_epoch_then_time_in_any_listing_order(
    records: list[tuple[int | None, int | None, int]], seed: int
) -> None:
    entries = []
    for i, (step, epoch, seconds) in enumerate(records):
        parts = [f"m{i}-"]
        if step is not None:
            parts.append(f"-step={step}")
        if epoch is not None:
            parts.append(f"-epoch={epoch}")
        entries.append(NamedCheckpoint("".join(parts) + "-last.ckpt", T0 + timedelta(seconds=seconds)))
    newest = max(
        range(len(records)),
        key=lambda i: (
            -1 if records[i][0] is None else records[i][0],
            -1 if records[i][1] is None else records[i][1],
            records[i][2],
            entries[i].url,
        ),
    )
    expected = entries[newest].url
    random.Random(seed).shuffle(entries)
    assert chosen(entries) == expected


@pytest.mark.parametrize(
    ("older", "newer", "reason"),
    [
        # NeMo's default filename {name}--{val_loss:.4f}-{epoch} has no step: the epoch decides, not the
        # alphabet (the val_loss comes first in the name, and "epoch=900" sorts after "epoch=1000").
        ("gpt--val_loss=0.1000-epoch=3-last.ckpt", "gpt--val_loss=0.2000-epoch=5-last.ckpt", "highest epoch"),
        (
            "gpt--val_loss=0.5000-epoch=900-last.ckpt",
            "gpt--val_loss=0.4000-epoch=1000-last.ckpt",
            "highest epoch",
        ),
        ("gpt--step=900-last.ckpt", "gpt--step=1000-last.ckpt", "highest step"),
        ("gpt--step=9-epoch=9-last.ckpt", "gpt--step=10-epoch=0-last.ckpt", "highest step"),
        ("z-last.ckpt", "a-last.ckpt", "newest LastModified"),
    ],
)
def test_the_newer_checkpoint_wins_whatever_the_names_sort_order(older: str, newer: str, reason: str) -> None:
    entries = [NamedCheckpoint(older, T0), NamedCheckpoint(newer, T0 + timedelta(minutes=1))]
    for order in (entries, entries[::-1]):
        choice = choose_resume_checkpoint(order)
        assert choice is not None
        assert (choice.checkpoint.url, choice.reason) == (newer, reason)


def test_resume_skips_unfinished_checkpoints_and_handles_none() -> None:
    assert chosen(named("m--step=5-last.ckpt", "m--step=9-last.ckpt", "m--step=9-last-unfinished")) == (
        "m--step=5-last.ckpt"
    )
    assert chosen(named("m--step=9-last.ckpt", "m--step=9-last.ckpt-unfinished")) is None
    assert chosen(named("s3://b/r/m--step=9-last.ckpt", "s3://b/r/m--step=9-last-unfinished")) is None
    assert chosen([]) is None
    assert chosen(named("notes.txt")) is None


def test_reasons_name_an_end_checkpoint_and_a_single_candidate() -> None:
    end = choose_resume_checkpoint(named("m--step=1-end.ckpt", "m--step=9-last.ckpt"))
    assert end is not None
    assert end.reason.startswith("*end.ckpt: the run finished")
    only = newest_checkpoint(named("last.ckpt"))
    assert only is not None
    assert only.reason == "the only candidate"
    assert newest_checkpoint([]) is None
