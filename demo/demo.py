"""The demo: train with async S3 checkpoints, SIGKILL the trainer as a crashed node, resume from S3.

    python demo/demo.py                                   # a local S3 server (moto) on 127.0.0.1
    python demo/demo.py --dirpath s3://my-bucket/demo     # your bucket, with your usual AWS settings

It runs training twice, each in its own process. The first run saves a checkpoint every
``--every-n-steps`` steps in the background (``S3CheckpointIO(async_checkpointing=True)`` with
``S3ModelCheckpoint(save_top_k=2, save_last=True)``) and is killed with SIGKILL once a checkpoint past
``--kill-at`` of the steps is in S3; whatever save was in flight then is lost, as it would be on a crashed
node. The second run resumes with ``ckpt_path="last"`` and trains to the end. Then it prints what is in
the bucket and what each save cost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
LOCAL_BUCKET = "s3ckpt-demo"
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "demo-access-key", "AWS_SECRET_ACCESS_KEY": "demo-secret-key"}
SERVER_START_TIMEOUT_S = 60.0
POLL_S = 0.1


# -- the training run (one process) ------------------------------------------------------------------


def train(args: argparse.Namespace) -> int:
    """One training process: fit to ``--steps``, saving asynchronously to S3; resume when asked."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from s3_checkpoint_io import S3CheckpointIO, S3ModelCheckpoint

    class DemoModel(pl.LightningModule):
        """A small MLP regression; ``--step-delay`` stands in for the time a real step takes on a GPU."""

        def __init__(self, hidden: int, step_delay: float) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(64, hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden, hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden, hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden, 1),
            )

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss, prog_bar=True)
            if self.hparams["step_delay"]:
                time.sleep(self.hparams["step_delay"])
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    class StatsFile(pl.Callback):
        """Appends each completed save's stats (and the run's start and end) to a JSON-lines file."""

        def __init__(self, path: Path, io: S3CheckpointIO) -> None:
            self.path, self.io, self.written = path, io, 0

        def _write(self, record: dict[str, Any]) -> None:
            with self.path.open("a") as out:
                out.write(json.dumps(record) + "\n")

        def _flush_saves(self) -> None:
            history = self.io.save_history
            for stats in history[self.written :]:
                self._write(
                    {
                        "event": "save",
                        "path": stats.path,
                        "bytes": stats.bytes,
                        "stall_s": stats.stall_s,
                        "upload_s": stats.upload_s,
                        "asynchronous": stats.asynchronous,
                    }
                )
            self.written = len(history)

        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            resumed = None if trainer.ckpt_path is None else str(trainer.ckpt_path)
            self._write({"event": "start", "resumed_from": resumed, "global_step": trainer.global_step})

        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            self._flush_saves()

        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.io.wait_for_saves()
            self._flush_saves()
            self._write({"event": "end", "global_step": trainer.global_step})

    class PlainLog(pl.Callback):
        """Progress for a log file: a line every ``every`` steps and one per completed save."""

        def __init__(self, io: S3CheckpointIO, every: int) -> None:
            self.io, self.every, self.saves_seen = io, every, 0

        def _print_saves(self) -> None:
            history = self.io.save_history
            for stats in history[self.saves_seen :]:
                print(
                    f"  saved {stats.path.rsplit('/', 1)[-1]}: {stats.bytes / MiB:.1f} MiB, training waited "
                    f"{stats.stall_s * 1000:.0f} ms, upload took {stats.upload_s:.2f} s",
                    flush=True,
                )
            self.saves_seen = len(history)

        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            self._print_saves()
            if trainer.global_step % self.every == 0:
                loss = trainer.callback_metrics.get("train_loss")
                shown = "" if loss is None else f"  train_loss {float(loss):.4f}"
                print(f"  step {trainer.global_step}/{trainer.max_steps}{shown}", flush=True)

        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self._print_saves()  # after StatsFile waited for the last saves

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size * 16, 64, generator=generator)
    y = (x[:, :8].sum(dim=1, keepdim=True) - x[:, 8:16].sum(dim=1, keepdim=True)).tanh()
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True, generator=generator)

    io = S3CheckpointIO(args.dirpath, chunk_size_MB=args.chunk_size_mb, async_checkpointing=True)
    checkpoint = S3ModelCheckpoint(
        dirpath=args.dirpath,
        filename="demo-{step}-{train_loss:.4f}",
        monitor="train_loss",
        save_top_k=2,
        save_last=True,
        every_n_train_steps=args.every_n_steps,
    )
    checkpoint.CHECKPOINT_NAME_LAST = "demo-{step}-last"
    # Lightning's bar redraws many times a second: right on a terminal, thousands of lines in a log file
    on_terminal = sys.stdout.isatty()
    callbacks: list[pl.Callback] = [checkpoint, StatsFile(Path(args.stats), io)]
    if not on_terminal:
        callbacks.append(PlainLog(io, every=args.every_n_steps))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=args.steps,
        plugins=[io],
        callbacks=callbacks,
        enable_progress_bar=on_terminal,
        logger=False,
        enable_model_summary=False,
        default_root_dir=args.workdir,
        log_every_n_steps=10,
    )
    model = DemoModel(args.hidden, args.step_delay)
    trainer.fit(model, loader, ckpt_path="last" if args.resume else None)
    return 0


# -- the orchestration (parent process) --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def local_s3() -> Iterator[dict[str, str]]:
    """Start moto's S3 server on 127.0.0.1 with a demo bucket; yield the environment that points at it."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(endpoint + "/moto-api/", timeout=2):
                    break
            except urllib.error.HTTPError:
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the local S3 server did not start on {endpoint}; is moto[server] installed?"
                    ) from None
                time.sleep(0.1)
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            **LOCAL_CREDENTIALS,
        }
        os.environ.pop("AWS_PROFILE", None)
        os.environ.update(env)
        from s3_utils import S3Store

        with S3Store() as store:
            store.client.create_bucket(Bucket=LOCAL_BUCKET)
        print(f"local S3 server (moto) on {endpoint}, bucket {LOCAL_BUCKET}", flush=True)
        yield env
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def _worker(args: argparse.Namespace, stats: Path, resume: bool) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--role=train",
        f"--dirpath={args.dirpath}",
        f"--steps={args.steps}",
        f"--every-n-steps={args.every_n_steps}",
        f"--hidden={args.hidden}",
        f"--batch-size={args.batch_size}",
        f"--step-delay={args.step_delay}",
        f"--chunk-size-mb={args.chunk_size_mb}",
        f"--stats={stats}",
        f"--workdir={args.workdir}",
    ]
    if resume:
        command.append("--resume")
    return subprocess.Popen(command)


def _checkpoints(dirpath: str) -> list[tuple[str, int]]:
    from s3_utils import S3Store

    prefix = dirpath.rstrip("/") + "/"
    with S3Store() as store:
        return [(info.url[len(prefix) :], info.size) for info in store.iter_objects(prefix)]


def _delete_everything_under(dirpath: str) -> None:
    from s3_utils import S3Store

    with S3Store() as store:
        deleted = store.delete_prefix(dirpath.rstrip("/") + "/")
    print(f"--clean: deleted {deleted} objects under {dirpath}", flush=True)


def _wait_for_step(dirpath: str, worker: subprocess.Popen[bytes], step: int, timeout_s: float) -> str | None:
    """Poll the bucket until a ``-last`` checkpoint of at least ``step`` is there; its name, or None."""
    from s3_utils.checkpoint_names import step_from_name

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and worker.poll() is None:
        for name, _ in _checkpoints(dirpath):
            found = step_from_name(name)
            if name.endswith("-last.ckpt") and found is not None and found >= step:
                return name
        time.sleep(POLL_S)
    return None


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _incomplete_uploads(dirpath: str) -> int:
    from s3_dirpath_utils import parse_s3_url
    from s3_utils import S3Store

    bucket, prefix = parse_s3_url(dirpath.rstrip("/") + "/")
    with S3Store() as store:
        return len(store.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []))


def summarize(
    args: argparse.Namespace, run1: list[dict[str, Any]], run2: list[dict[str, Any]]
) -> dict[str, Any]:
    """Print the summary and return it as a dict (the test reads the JSON form)."""
    from s3_utils.checkpoint_names import step_from_name

    checkpoints = sorted(_checkpoints(args.dirpath), key=lambda c: (step_from_name(c[0]) or -1, c[0]))
    saves = [r for r in run1 + run2 if r["event"] == "save"]
    start2 = next((r for r in run2 if r["event"] == "start"), {})
    end2 = next((r for r in run2 if r["event"] == "end"), {})
    resumed_from = start2.get("resumed_from")

    print("\n== summary ==")
    print(f"checkpoints in {args.dirpath.rstrip('/')}/:")
    for name, size in checkpoints:
        print(f"  {size / MiB:8.2f} MiB  {name}")
    print(f"saves: {len(saves)} ({sum(1 for r in run1 if r['event'] == 'save')} before the SIGKILL)")
    print(f"  {'stall s':>8} {'upload s':>9} {'MiB/s':>8}  checkpoint")
    for record in saves:
        rate = record["bytes"] / MiB / record["upload_s"] if record["upload_s"] > 0 else 0.0
        name = record["path"].rsplit("/", 1)[-1]
        print(f"  {record['stall_s']:8.3f} {record['upload_s']:9.3f} {rate:8.1f}  {name}")
    if saves:
        stalls = [r["stall_s"] for r in saves]
        uploads = [r["upload_s"] for r in saves]
        rates = [r["bytes"] / MiB / r["upload_s"] for r in saves if r["upload_s"] > 0]
        print(
            f"  median stall {statistics.median(stalls) * 1000:.1f} ms (training blocked), median upload "
            f"{statistics.median(uploads):.3f} s in the background, "
            f"median {statistics.median(rates) if rates else 0.0:.1f} MiB/s"
        )
    print(f"resumed from: {resumed_from} (training restarted at step {start2.get('global_step')})")
    print(f"finished at step {end2.get('global_step')}")
    leftover = _incomplete_uploads(args.dirpath)
    if leftover:
        print(
            f"{leftover} incomplete upload(s) left by the killed save (never visible as checkpoints); "
            f"`s3ckpt cleanup {args.dirpath} --older-than 1d` aborts stale ones"
        )
    summary = {
        "checkpoints": [{"name": n, "size": s} for n, s in checkpoints],
        "saves": saves,
        "resumed_from": resumed_from,
        "resume_step": start2.get("global_step"),
        "final_step": end2.get("global_step"),
        "killed_after": args.killed_after,
        "incomplete_uploads": leftover,
    }
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2))
    return summary


def orchestrate(args: argparse.Namespace) -> int:
    """Start S3 if needed, run, kill, resume, summarize."""
    with contextlib.ExitStack() as stack:
        if args.dirpath is None:
            stack.enter_context(local_s3())
            args.dirpath = f"s3://{LOCAL_BUCKET}/run/checkpoints"
        elif _checkpoints(args.dirpath):
            if not args.clean:
                print(
                    f"{args.dirpath} is not empty, and the resume would pick up what is there; use an empty "
                    "prefix, or pass --clean to delete everything under it first",
                    file=sys.stderr,
                )
                return 2
            _delete_everything_under(args.dirpath)
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="s3ckpt-demo-"))
        args.workdir = workdir
        stats1, stats2 = Path(workdir, "run1.jsonl"), Path(workdir, "run2.jsonl")
        kill_step = max(args.every_n_steps, int(args.steps * args.kill_at))

        print(f"run 1: training {args.steps} steps, async checkpoints to {args.dirpath}", flush=True)
        worker = _worker(args, stats1, resume=False)
        try:
            seen = _wait_for_step(args.dirpath, worker, kill_step, args.timeout)
        finally:
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGKILL)
            code = worker.wait(timeout=60)
        if seen is None:
            print(
                f"run 1 ended (exit code {code}) before a checkpoint at step {kill_step} appeared; "
                "raise --steps or --step-delay",
                file=sys.stderr,
            )
            return 1
        args.killed_after = seen
        print(f"\nrun 1: SIGKILLed (exit code {code}) after {seen} reached S3, as a crashed node", flush=True)

        print("run 2: a new process resumes with ckpt_path='last'", flush=True)
        worker = _worker(args, stats2, resume=True)
        try:
            code = worker.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=60)
            print(f"run 2 did not finish within {args.timeout:.0f}s", file=sys.stderr)
            return 1
        if code != 0:
            print(f"run 2 failed with exit code {code}", file=sys.stderr)
            return 1
        summarize(args, _records(stats1), _records(stats2))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dirpath", help="s3://bucket/prefix (default: a local S3 server on 127.0.0.1)")
    parser.add_argument("--steps", type=int, default=300, help="training steps (default: 300)")
    parser.add_argument("--every-n-steps", type=int, default=25, help="save every N steps (default: 25)")
    parser.add_argument("--kill-at", type=float, default=0.6, help="kill after this fraction of steps (0.6)")
    parser.add_argument("--hidden", type=int, default=512, help="MLP width; sets the checkpoint size (512)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--step-delay", type=float, default=0.02, help="seconds of simulated GPU work per step (0.02)"
    )
    parser.add_argument("--chunk-size-mb", type=float, default=5, help="S3 part size in MiB (default: 5)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds each run may take (600)")
    parser.add_argument("--summary-json", help="also write the summary as JSON to this file")
    parser.add_argument(
        "--clean", action="store_true", help="with --dirpath: delete everything under it before starting"
    )
    parser.add_argument("--role", choices=["demo", "train"], default="demo", help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2 * args.every_n_steps:
        parser.error("--steps must be at least twice --every-n-steps, so that there is something to resume")
    if not 0 < args.kill_at < 1:
        parser.error("--kill-at must be between 0 and 1")
    args.killed_after = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return train(args) if args.role == "train" else orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
