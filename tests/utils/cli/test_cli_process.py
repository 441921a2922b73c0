"""``s3ckpt`` as a user runs it: the installed console script in its own process, real local faults
(a full device, a file-size limit), a real terminal for confirmations, and what it must not import.
"""

from __future__ import annotations

import os
import pty
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from s3_utils.cli import exit_codes
from support.payloads import payload
from support.s3_objects import object_keys
from support.s3_server import free_port

MiB = 1024 * 1024
TIMEOUT_S = 60


def s3ckpt_command() -> list[str]:
    script = Path(sys.executable).parent / "s3ckpt"
    return [str(script)] if script.exists() else [sys.executable, "-m", "s3_utils.cli"]


def run(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*s3ckpt_command(), *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
        **kwargs,
    )


def test_the_console_script_is_installed() -> None:
    assert shutil.which("s3ckpt", path=str(Path(sys.executable).parent)) is not None


def test_no_command_is_a_usage_error() -> None:
    result = run()
    assert result.returncode == exit_codes.USAGE
    assert "usage: s3ckpt" in result.stderr


def test_version_via_python_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "s3_utils.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("s3ckpt ")


def test_download_to_a_full_device_fails_clearly(s3_client: Any, bucket: str) -> None:
    s3_client.put_object(Bucket=bucket, Key="k.ckpt", Body=payload(64 * 1024))
    result = run("cp", f"s3://{bucket}/k.ckpt", "/dev/full")
    assert result.returncode == exit_codes.FAILURE, result
    assert "No space left on device" in result.stderr
    assert Path("/dev/full").is_char_device()


def _limit_file_size_to_1_mib() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (MiB, MiB))


def test_download_past_a_file_size_limit_removes_the_partial_file(
    tmp_path: Path, s3_client: Any, bucket: str
) -> None:
    s3_client.put_object(Bucket=bucket, Key="big.ckpt", Body=payload(6 * MiB))
    target = tmp_path / "big.ckpt"
    target.write_bytes(b"the previous good checkpoint")

    result = run("cp", f"s3://{bucket}/big.ckpt", str(target), preexec_fn=_limit_file_size_to_1_mib)

    assert result.returncode == exit_codes.FAILURE, result
    assert "File too large" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.ckpt"]  # no partial file left
    assert target.read_bytes() == b"the previous good checkpoint"


def test_an_endpoint_that_does_not_answer_fails_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run("--endpoint-url", f"http://127.0.0.1:{free_port()}", "ls", "s3://some-bucket/x")
    assert result.returncode == exit_codes.FAILURE, result
    assert "could not connect" in result.stderr
    assert time.monotonic() - started < TIMEOUT_S


def test_errors_never_show_the_secret_key(bucket: str) -> None:
    secret = "secret-key-that-must-never-be-printed"
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": secret}
    result = run("-vv", "verify", "--no-load", f"s3://{bucket}/missing.ckpt", env=env)
    assert result.returncode == exit_codes.NOT_FOUND, result
    assert "missing.ckpt" in result.stderr
    assert secret not in result.stdout + result.stderr


def _answer_on_a_terminal(argv: list[str], answer: bytes) -> tuple[int, str]:
    """Run s3ckpt with stdin/stdout/stderr on a pseudo-terminal, type ``answer`` at the prompt."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*s3ckpt_command(), *argv], stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True
    )
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while b"[y/N]" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                seen += os.read(controller, 4096)
        os.write(controller, answer)
        code = process.wait(timeout=TIMEOUT_S)
        while True:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if not ready:
                break
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        os.close(controller)
    return code, seen.decode(errors="replace")


@pytest.mark.parametrize(("answer", "deleted"), [(b"y\n", True), (b"n\n", False)])
def test_rm_asks_on_a_terminal(answer: bytes, deleted: bool, s3_client: Any, bucket: str) -> None:
    s3_client.put_object(Bucket=bucket, Key="c/a.ckpt", Body=b"x" * 100)

    code, screen = _answer_on_a_terminal(["rm", f"s3://{bucket}/c/a.ckpt"], answer)

    assert f"delete s3://{bucket}/c/a.ckpt (100 B)? [y/N]" in screen
    remaining = len(object_keys(s3_client, bucket))
    if deleted:
        assert code == exit_codes.OK, screen
        assert remaining == 0
    else:
        assert code == exit_codes.FAILURE, screen
        assert "nothing deleted" in screen
        assert remaining == 1


def test_the_torch_free_commands_never_import_torch(s3_client: Any, bucket: str, tmp_path: Path) -> None:
    s3_client.put_object(Bucket=bucket, Key="c/m--step=1-last.ckpt", Body=b"x")
    code = (
        "import sys\n"
        "from s3_utils.cli import main\n"
        f"assert main(['ls', 's3://{bucket}/c/']) == 0\n"
        f"assert main(['cp', 's3://{bucket}/c/m--step=1-last.ckpt', {str(tmp_path)!r}]) == 0\n"
        f"assert main(['verify', '--no-load', 's3://{bucket}/c/m--step=1-last.ckpt']) == 0\n"
        "above = ('torch', 'lightning', 's3_checkpoint_io')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in above)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert result.returncode == 0, result.stderr


def test_ctrl_c_during_a_download_exits_130_and_leaves_no_partial_file(
    tmp_path: Path, s3_client: Any, bucket: str
) -> None:
    s3_client.put_object(Bucket=bucket, Key="big.ckpt", Body=payload(96 * MiB))
    process = subprocess.Popen(
        [
            *s3ckpt_command(),
            "cp",
            "--chunk-size-mb=5",
            "--concurrency=1",
            f"s3://{bucket}/big.ckpt",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not any(tmp_path.iterdir()) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.poll() is None, "the download finished before it could be interrupted"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == exit_codes.INTERRUPTED, err
    assert "interrupted" in err
    assert list(tmp_path.iterdir()) == []
