"""The CLI's progress bars are fed by the store's on_progress hook: one update per part or range moved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from s3_utils.cli import console as console_module
from s3_utils.cli import exit_codes
from support import payloads
from support.cli import s3ckpt

MiB = 1024 * 1024
PART = 5 * MiB
SIZE = 2 * PART + 123  # three 5 MiB parts / ranges


@pytest.fixture
def bar_updates(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    updates: list[int] = []

    class RecordingBar(console_module.tqdm):  # type: ignore[misc, name-defined]
        def update(self, n: float | None = 1) -> bool | None:
            updates.append(int(n or 0))
            return super().update(n)  # type: ignore[no-any-return]

    monkeypatch.setattr(console_module, "tqdm", RecordingBar)
    return updates


def test_cp_and_verify_bars_count_each_part_once_as_the_store_moves_it(
    tmp_path: Path, bucket: str, bar_updates: list[int]
) -> None:
    data = payloads.payload(SIZE)
    source = tmp_path / "model.ckpt"
    source.write_bytes(data)
    url = f"s3://{bucket}/model.ckpt"
    stages: dict[str, list[int]] = {}

    for stage, argv in {
        "upload": ("cp", "--chunk-size-mb", "5", str(source), url),
        "download": ("cp", "--chunk-size-mb", "5", url, str(tmp_path / "back.ckpt")),
    }.items():
        bar_updates.clear()
        result = s3ckpt(*argv, progress=True)
        assert result.code == exit_codes.OK, result
        stages[stage] = sorted(bar_updates)

    assert stages["upload"] == stages["download"] == sorted([PART, PART, 123])
    assert (tmp_path / "back.ckpt").read_bytes() == data


def test_verify_bar_counts_the_bytes_read_once(bucket: str, store: Any, bar_updates: list[int]) -> None:
    store.upload_bytes(f"s3://{bucket}/v.ckpt", payloads.payload(SIZE))
    result = s3ckpt("verify", "--no-load", f"s3://{bucket}/v.ckpt", progress=True)
    assert result.code == exit_codes.OK, result
    assert sum(bar_updates) == SIZE
