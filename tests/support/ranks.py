"""Run a function on N ranks: one CPU process each, torch.distributed over gloo on 127.0.0.1.

Each rank is a fresh ``python`` process (no fork of the test process) with the usual variables set
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``), so both
plain ``torch.distributed`` code and a Lightning ``Trainer`` (which sees ``LOCAL_RANK`` and does not
launch processes itself) work unchanged. The target is named ``"module:function"`` and is called with
the string arguments given. Every launch is bounded: when one rank fails the others get a short grace
period, then every straggler is killed, so a rank stuck in a collective never hangs the test run.

    results = launch("checkpoint_io.ddp_train:main", world_size=2, args=[url], timeout_s=120)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from support.s3_server import free_port

TESTS_DIR = Path(__file__).resolve().parent.parent
GRACE_AFTER_FAILURE_S = 5.0
_ENTRY = (
    "import importlib, sys\n"
    "module, _, name = sys.argv[1].partition(':')\n"
    "getattr(importlib.import_module(module), name)(*sys.argv[2:])\n"
)
# A rank leaves through os._exit once its target has returned (or raised) and its output is flushed:
# gloo's objects torn down during interpreter finalization abort a finished rank now and then
# ("terminate called without an active exception", SIGABRT; pytorch/pytorch#190489 and #179291), which
# failed about 2 CI runs in 7. A rank's work, and every exit code a target chooses, are kept; only the
# interpreter's own teardown is skipped, so a rank target must not rely on exit hooks (spawn() keeps them).
_RANK_ENTRY = (
    "import importlib, os, sys, traceback\n"
    "module, _, name = sys.argv[1].partition(':')\n"
    "code = 0\n"
    "try:\n"
    "    getattr(importlib.import_module(module), name)(*sys.argv[2:])\n"
    "except SystemExit as exc:\n"
    "    if isinstance(exc.code, int) or exc.code is None:\n"
    "        code = exc.code or 0\n"
    "    else:\n"
    "        print(exc.code, file=sys.stderr)\n"
    "        code = 1\n"
    "except BaseException:\n"
    "    traceback.print_exc()\n"
    "    code = 1\n"
    "sys.stdout.flush()\n"
    "sys.stderr.flush()\n"
    "os._exit(code)\n"
)


@dataclass(frozen=True)
class RankResult:
    """How one rank ended: its exit code (negative: killed by that signal) and its output."""

    rank: int
    returncode: int
    output: str


class RanksFailed(AssertionError):
    """At least one rank exited non-zero or was killed; the message holds every failing rank's output."""


def init_process_group(timeout_s: float = 60.0) -> None:
    """Call inside a rank: join the gloo process group from the variables :func:`launch` sets."""
    from datetime import timedelta

    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))


def command(target: str, args: Sequence[str] = ()) -> list[str]:
    """The command line that runs ``target(*args)`` in a fresh interpreter (see :func:`spawn`)."""
    return [sys.executable, "-c", _ENTRY, target, *args]


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``env``, with ``tests/`` on ``PYTHONPATH``."""
    merged = dict(os.environ)
    merged.update(env or {})
    merged["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), merged.get("PYTHONPATH")]))
    return merged


def spawn(
    target: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start one process running ``target(*args)`` (not a rank: no distributed variables), output piped.

    The caller owns it: wait for it, or kill it (e.g. to test a crash) and then wait.
    """
    return subprocess.Popen(
        command(target, args),
        env=child_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def launch(
    target: str,
    world_size: int,
    args: Sequence[str] = (),
    *,
    timeout_s: float = 120.0,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> list[RankResult]:
    """Run ``target(*args)`` on ``world_size`` ranks and wait for all of them (at most ``timeout_s``).

    Args:
        target: ``"package.module:function"``, importable with ``tests/`` on the path.
        world_size: number of ranks (processes).
        args: strings passed to the function.
        timeout_s: wall-clock limit for the whole launch; stragglers are killed after it.
        env: extra environment variables for every rank.
        check: raise :class:`RanksFailed` if any rank did not exit 0.

    Returns:
        One result per rank, in rank order.

    Raises:
        RanksFailed: if ``check`` and a rank failed or had to be killed.
    """
    port = free_port()
    base_env = child_env(env)
    with tempfile.TemporaryDirectory(prefix="ranks-") as logs:
        processes: list[subprocess.Popen[bytes]] = []
        files = []
        try:
            for rank in range(world_size):
                rank_env = dict(base_env)
                rank_env.update(
                    RANK=str(rank),
                    LOCAL_RANK=str(rank),
                    NODE_RANK="0",
                    GROUP_RANK="0",
                    WORLD_SIZE=str(world_size),
                    LOCAL_WORLD_SIZE=str(world_size),
                    MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=str(port),
                )
                log_file = open(Path(logs) / f"rank{rank}.log", "w+b")  # noqa: SIM115
                files.append(log_file)
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-c", _RANK_ENTRY, target, *args],
                        env=rank_env,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            _wait_all(processes, timeout_s)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
        results = []
        for rank, (process, log_file) in enumerate(zip(processes, files, strict=True)):
            log_file.seek(0)
            output = log_file.read().decode(errors="replace")
            log_file.close()
            results.append(RankResult(rank, process.returncode, output))
    failed = [r for r in results if r.returncode != 0]
    if check and failed:
        details = "\n".join(f"--- rank {r.rank} exited {r.returncode}:\n{r.output[-4000:]}" for r in failed)
        raise RanksFailed(f"{len(failed)} of {world_size} ranks failed running {target}:\n{details}")
    return results


def _wait_all(processes: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    failed_at: float | None = None
    while True:
        codes = [p.poll() for p in processes]
        if all(code is not None for code in codes):
            return
        now = time.monotonic()
        if failed_at is None and any(code not in (None, 0) for code in codes):
            failed_at = now
        if now > deadline or (failed_at is not None and now - failed_at > GRACE_AFTER_FAILURE_S):
            return  # the caller kills whoever is left
        time.sleep(0.05)
