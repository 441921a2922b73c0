"""``file_replacing``: a local file appears whole or not at all, whatever interrupts the write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from s3_utils import local_files
from s3_utils.local_files import file_replacing


def test_a_completed_write_replaces_the_target_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "model.ckpt"
    target.write_bytes(b"old")
    with file_replacing(target) as fd:
        os.write(fd, b"new bytes")
        assert target.read_bytes() == b"old", "the target changed before the write completed"
    assert target.read_bytes() == b"new bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, OSError, ValueError])
def test_an_interrupted_write_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: Path, interruption: type[BaseException]
) -> None:
    target = tmp_path / "model.ckpt"
    target.write_bytes(b"old")
    with pytest.raises(interruption):
        _write_then_fail(target, b"half", interruption())
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_ctrl_c_the_instant_after_the_temporary_is_created_still_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def open_then_interrupted(path: str, flags: int, mode: int = 0o777) -> int:
        os.close(real_open(path, flags, mode))
        raise KeyboardInterrupt  # the signal lands before the descriptor reaches the caller

    monkeypatch.setattr(local_files.os, "open", open_then_interrupted)
    with pytest.raises(KeyboardInterrupt), file_replacing(tmp_path / "model.ckpt"):
        pytest.fail("the block must not run")
    assert list(tmp_path.iterdir()) == []


def test_another_writers_temporary_of_the_same_name_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(local_files.secrets, "token_hex", lambda _n: next(tokens))
    theirs = tmp_path / ".model.ckpt.aaaaaaaaaaaa.part"
    theirs.write_bytes(b"someone else's")
    with pytest.raises(RuntimeError):
        _write_then_fail(tmp_path / "model.ckpt", b"ours", RuntimeError("fails"))
    assert next(tokens, None) is None, "the second name was never tried"
    assert sorted(p.name for p in tmp_path.iterdir()) == [theirs.name]
    assert theirs.read_bytes() == b"someone else's"


def _write_then_fail(target: Path, data: bytes, failure: BaseException) -> None:
    with file_replacing(target) as fd:
        os.write(fd, data)
        raise failure
