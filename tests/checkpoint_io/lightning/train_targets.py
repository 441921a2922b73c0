"""Training runs that tests start in separate processes (via support.ranks): a DDP run and a run to kill."""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy

from checkpoint_io.lit_helpers import CaptureAtTrainStart, TinyModel, capture, data, trainer
from s3_checkpoint_io import S3CheckpointIO, S3ModelCheckpoint

BIG_FROM_STEP = 4
BIG_BYTES = 40 * 2**20


class GrowingModel(TinyModel):
    """From step 4 on, its checkpoints carry 40 MiB more, so their upload takes many parts."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.global_step >= BIG_FROM_STEP:
            checkpoint["padding"] = torch.zeros(BIG_BYTES // 4)


def run_until_killed(dirpath: str, endpoint_url: str, root: str) -> None:
    """Async checkpoints every 2 steps (all kept, plus last) for far more steps than a test waits for."""
    io = S3CheckpointIO(dirpath, chunk_size_MB=5, async_checkpointing=True, endpoint_url=endpoint_url)
    callback = S3ModelCheckpoint(
        dirpath, filename="{step}", save_top_k=-1, save_last=True, every_n_train_steps=2
    )
    trainer(plugins=[io], callbacks=[callback], max_steps=10_000, max_epochs=10_000, root=root).fit(
        GrowingModel(), data()
    )


def ddp_save_and_resume(dirpath: str, out_dir: str, async_checkpointing: str) -> None:
    """On every rank: train 4 steps with checkpoints, then resume a new Trainer with ckpt_path="last"."""
    rank = int(__import__("os").environ["RANK"])
    results: dict[str, Any] = {"rank": rank}

    def make(max_steps: int, extra: list[Any]) -> Any:
        io = S3CheckpointIO(dirpath, chunk_size_MB=5, async_checkpointing=async_checkpointing == "async")
        strategy = DDPStrategy(checkpoint_io=io, process_group_backend="gloo")
        callback = S3ModelCheckpoint(
            dirpath,
            filename="{step}",
            monitor="score",
            mode="max",
            save_top_k=2,
            save_last=True,
            every_n_train_steps=2,
        )
        return trainer(
            strategy=strategy, devices=2, callbacks=[callback, *extra], max_steps=max_steps, root=out_dir
        )

    first = make(4, [])
    model = TinyModel()
    first.fit(model, data(batches=8))
    ended = capture(first, model)
    results["ended_step"] = ended["global_step"]
    results["ended_weights"] = {k: v.tolist() for k, v in ended["weights"].items()}

    seen = CaptureAtTrainStart()
    second = make(6, [seen])
    second.fit(TinyModel(), data(batches=8), ckpt_path="last")
    assert seen.state is not None
    results["resumed_step"] = seen.state["global_step"]
    results["resumed_from"] = seen.ckpt_path
    results["resumed_weights"] = {k: v.tolist() for k, v in seen.state["weights"].items()}
    pathlib.Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    print("rank", rank, "done", file=sys.stderr)


def sync_save_peak_memory(url: str, out_file: str, tensor_mib: str) -> None:
    """Save one large tensor synchronously; write how far the process's peak RSS rose during the save."""
    import resource

    io = S3CheckpointIO(url.rsplit("/", 1)[0], chunk_size_MB=5, max_write_concurrency=4)
    big = {"w": torch.ones(int(tensor_mib) * 2**20 // 4)}
    io.save_checkpoint({"warm": torch.ones(4)}, url + ".warmup")  # clients and threads exist now
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    io.save_checkpoint(big, url)
    after_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stats = io.last_save_stats
    assert stats is not None
    io.teardown()
    pathlib.Path(out_file).write_text(
        json.dumps({"peak_rise_mib": (after_kib - before_kib) / 1024, "bytes": stats.bytes})
    )


def load_peak_memory(url: str, out_file: str) -> None:
    """Load ``url``; write how far the process's peak RSS rose during the load, and a checksum."""

    def status_mib(field: str) -> float:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise LookupError(field)

    io = S3CheckpointIO(url.rsplit("/", 1)[0], chunk_size_MB=5, max_read_concurrency=4)
    io.load_checkpoint(url + ".warmup")  # clients and threads exist now
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) from here
    before = status_mib("VmRSS")
    loaded = io.load_checkpoint(url)
    rise = status_mib("VmHWM") - before
    total = int(loaded["w"].sum())
    pathlib.Path(out_file).write_text(json.dumps({"peak_rise_mib": rise, "sum": total}))
