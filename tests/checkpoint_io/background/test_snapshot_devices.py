"""A snapshot of CUDA tensors waits for the copies from every device it read, not only the current one."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from s3_checkpoint_io.background.snapshot import HostBufferPool, take_snapshot, wait_for_device_copies


class RecordingStream:
    def __init__(self, device: torch.device, synchronized: list[torch.device]) -> None:
        self.device, self.synchronized = device, synchronized

    def synchronize(self) -> None:
        self.synchronized.append(self.device)


def test_waiting_synchronizes_the_current_stream_of_each_device(monkeypatch: pytest.MonkeyPatch) -> None:
    synchronized: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: RecordingStream(device, synchronized))
    devices = {torch.device("cuda", 0), torch.device("cuda", 1), torch.device("cuda", 3)}
    wait_for_device_copies(devices)
    assert sorted(synchronized, key=str) == sorted(devices, key=str)


def test_a_cpu_snapshot_waits_on_no_device(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_cuda_here(device: Any) -> None:
        raise AssertionError(f"waited on {device} for a CPU-only state")

    monkeypatch.setattr(torch.cuda, "current_stream", no_cuda_here)
    snapshot = take_snapshot({"w": torch.randn(4), "step": 1}, HostBufferPool())
    assert snapshot.devices == frozenset()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_a_snapshot_of_tensors_on_two_devices_waits_for_both() -> None:
    pool = HostBufferPool()
    live = {f"w{i}": torch.randn(1024, 1024, device=f"cuda:{i}") for i in range(2)}
    expected = {key: value.cpu() for key, value in live.items()}
    with torch.cuda.device(0):
        snapshot = take_snapshot(live, pool)
    for value in live.values():
        value.add_(1.0)
    assert snapshot.devices == {torch.device("cuda", 0), torch.device("cuda", 1)}
    for key, value in expected.items():
        assert torch.equal(snapshot.state[key], value)
