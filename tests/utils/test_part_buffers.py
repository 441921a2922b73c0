"""A streaming upload sends its part buffers in place and reuses them: no copy, no fresh buffer per part."""

from __future__ import annotations

from typing import Any

from support.payloads import payload
from support.s3_server import MotoServer
from support.stores import CHUNK, small_store


def test_parts_are_sent_from_at_most_concurrency_plus_one_reused_buffers(
    s3_server: MotoServer, bucket: str
) -> None:
    data = payload(8 * CHUNK + 123)
    url = f"s3://{bucket}/pooled.ckpt"
    sent_from: list[Any] = []

    def record_body(request: Any, **kwargs: Any) -> None:
        if request.method == "PUT" and request.body is not None:
            start = request.body.tell()
            piece = request.body.read(1)  # what the HTTP layer gets: a view of the buffer, or a copy
            request.body.seek(start)
            sent_from.append(memoryview(piece).obj)

    with small_store(max_concurrency=2) as store:
        store.client.meta.events.register("before-send.s3.UploadPart", record_body)
        try:
            with store.open_writer(url) as writer:
                for start in range(0, len(data), 1024 * 1024):  # small writes, as torch.save makes
                    writer.write(data[start : start + 1024 * 1024])
        finally:
            store.client.meta.events.unregister("before-send.s3.UploadPart", record_body)
        assert store.download_bytes(url) == data
    assert len(sent_from) == 9
    assert all(isinstance(source, bytearray) for source in sent_from), "parts were copied before sending"
    assert len({id(source) for source in sent_from}) <= 3, "a fresh buffer per part instead of reuse"


def test_a_closed_writer_kept_for_its_stats_holds_no_part_buffers(s3_server: MotoServer, bucket: str) -> None:
    import tracemalloc

    with small_store(max_concurrency=2) as store:
        store.upload_bytes(f"s3://{bucket}/warm-up", b"x")  # loads botocore's service models first
        tracemalloc.start()
        try:
            with store.open_writer(f"s3://{bucket}/kept.ckpt") as writer:
                writer.write(payload(4 * CHUNK))
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert writer.stats is not None
        assert writer.stats.bytes == 4 * CHUNK
    assert held < CHUNK, f"{held / CHUNK:.1f} chunks still held after close()"
