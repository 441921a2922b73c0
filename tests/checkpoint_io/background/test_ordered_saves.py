"""The ordered-saves engine on its own: saves it runs, saves it tracks, and the jobs queued behind them."""

from __future__ import annotations

import pathlib
import threading
from concurrent.futures import Future

import pytest

import s3_checkpoint_io
from s3_checkpoint_io.background.ordered_saves import OrderedSaves
from s3_checkpoint_io.errors import BackgroundSaveError


def test_a_removal_behind_a_tracked_save_runs_only_after_it_succeeds() -> None:
    saves = OrderedSaves(max_pending_saves=1)
    running: Future[None] = Future()
    removed = threading.Event()
    try:
        saves.track("s3://b/new", running)
        saves.submit_after_saves("s3://b/old", "removal", removed.set)
        assert saves.pending_saves() == ["s3://b/new"]
        assert not removed.wait(0.2)  # the save it must not outrun is still running
        running.set_result(None)
        saves.wait(timeout=10)
        assert removed.is_set()
        saves.raise_failures()  # nothing failed
    finally:
        saves.close()


def test_a_failed_tracked_save_skips_the_removals_behind_it_and_is_left_to_its_owner() -> None:
    saves = OrderedSaves(max_pending_saves=1)
    running: Future[None] = Future()
    removed: list[str] = []
    try:
        saves.track("s3://b/new", running)
        saves.submit_after_saves("s3://b/before-failure", "removal", lambda: removed.append("before"))
        running.set_exception(RuntimeError("commit refused"))
        saves.wait(timeout=10)
        # Queued once the save has failed, but before its owner reported it: still skipped.
        saves.submit_after_saves("s3://b/after-failure", "removal", lambda: removed.append("after"))
        saves.wait(timeout=10)
        assert removed == []
        saves.raise_failures()  # the owner raises a tracked save's failure, not the engine

        saves.forget_tracked_failures()  # the owner has reported it
        saves.submit_after_saves("s3://b/reported", "removal", lambda: removed.append("reported"))
        saves.wait(timeout=10)
        assert removed == ["reported"]
    finally:
        saves.close()


def test_a_failing_removal_is_raised_by_the_engine_naming_its_path() -> None:
    saves = OrderedSaves(max_pending_saves=1)

    def refuse() -> None:
        raise PermissionError("delete refused")

    try:
        saves.submit_after_saves("s3://b/old", "removal", refuse)
        saves.wait(timeout=10)
        with pytest.raises(BackgroundSaveError, match=r"removal of s3://b/old failed: PermissionError"):
            saves.raise_failures()
    finally:
        saves.close()


def test_the_private_exit_hook_is_used_in_one_module_only() -> None:
    package = pathlib.Path(s3_checkpoint_io.__file__).parent
    users = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "threading._register_atexit(" in path.read_text()
    )
    assert users == ["background/before_exit.py"]
