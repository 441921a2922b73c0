"""Run a function on N ranks: one CPU process each, torch.distributed over gloo on 127.0.0.1.

Each rank is a fresh ``python`` process (no fork of the test process) with the usual variables set
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``), so both
plain ``torch.distributed`` code and a Lightning ``Trainer`` (which sees ``LOCAL_RANK`` and does not
launch processes itself) work unchanged. The target is a module-level function, passed as itself and
called with the string arguments given; the child imports it by its module and name, from the folder its
module was imported from here, so it is the same module under the same name. Every launch is bounded:
when one rank fails the others get a short grace period, then every straggler is killed, so a rank
stuck in a collective never hangs the test run.

    from checkpoint_io.rank_targets import all_reduce_rank_ids

    results = launch(all_reduce_rank_ids, world_size=2, args=[str(tmp_path)], timeout_s=90)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from support.s3_server import free_port

TESTS_DIR = Path(__file__).resolve().parent.parent
RankTarget = Callable[..., object]
"""A module-level function of an importable module; the child calls it with string arguments."""
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


def target_name(target: RankTarget) -> str:
    """``"module:function"``: the name a fresh interpreter imports ``target`` by.

    Raises:
        ValueError: ``target`` is not reachable by that name (a nested function, a lambda, a partial,
            or a function of ``__main__``).
    """
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", None)
    if module is None or name is None or getattr(sys.modules.get(module), name, None) is not target:
        raise ValueError(f"{target!r} is not a module-level function a fresh interpreter can import by name")
    return f"{module}:{name}"


def _import_root(target: RankTarget) -> Path:
    """The ``sys.path`` folder ``target``'s module was imported from (``tests/`` for ``checkpoint_io.x``)."""
    path = getattr(sys.modules[target.__module__], "__file__", None)
    if path is None:
        raise ValueError(f"{target.__module__} has no file a fresh interpreter could import")
    file = Path(path).resolve()
    depth = target.__module__.count(".") + (1 if file.name == "__init__.py" else 0)
    return file.parents[depth]


def command(target: RankTarget, args: Sequence[str] = ()) -> list[str]:
    """The command line that runs ``target(*args)`` in a fresh interpreter (see :func:`spawn`)."""
    return [sys.executable, "-c", _ENTRY, target_name(target), *args]


def child_env(target: RankTarget, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``env``, ``target``'s import root and ``tests/`` on ``PYTHONPATH``."""
    merged = dict(os.environ)
    merged.update(env or {})
    roots = dict.fromkeys([str(_import_root(target)), str(TESTS_DIR)])  # in order, once each
    merged["PYTHONPATH"] = os.pathsep.join(filter(None, [*roots, merged.get("PYTHONPATH")]))
    return merged


def spawn(
    target: RankTarget, args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start one process running ``target(*args)`` (not a rank: no distributed variables), output piped.

    The caller owns it: wait for it, or kill it (e.g. to test a crash) and then wait.
    """
    return subprocess.Popen(
        command(target, args),
        env=child_env(target, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def launch(
    target: RankTarget,
    world_size: int,
    args: Sequence[str] = (),
    *,
    timeout_s: float = 120.0,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> list[RankResult]:
    """Run ``target(*args)`` on ``world_size`` ranks and wait for all of them (at most ``timeout_s``).

    Args:
        target: a module-level function (see :func:`target_name`).
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
    name = target_name(target)
    port = free_port()
    base_env = child_env(target, env)
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
                        [sys.executable, "-c", _RANK_ENTRY, name, *args],
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
        raise RanksFailed(f"{len(failed)} of {world_size} ranks failed running {name}:\n{details}")
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
