"""A streaming upload sends its part buffers in place and reuses them: no copy, no fresh buffer per part;
the buffers it creates are backed by transparent huge pages where the kernel offers them."""

from __future__ import annotations

import ctypes
import mmap
import pathlib
import re
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3_utils.buffers import (
    KEPT_BUFFER_BYTES,
    LARGE_PAGE,
    SEND_PIECE,
    BufferBody,
    KeptBuffers,
    new_part_buffer,
)
from support.payloads import payload
from support.s3_server import MotoServer
from support.stores import CHUNK, count_new_part_buffers, small_store


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
    assert all(isinstance(source, bytearray | mmap.mmap) for source in sent_from), (
        "parts were copied before sending"
    )
    assert len({id(source) for source in sent_from}) <= 3, "a fresh buffer per part instead of reuse"


def test_a_closed_writer_holds_no_part_buffers_and_its_store_keeps_at_most_its_limit(
    s3_server: MotoServer, bucket: str
) -> None:
    import tracemalloc

    mapped: list[weakref.ref[mmap.mmap]] = []  # tracemalloc does not see mappings; weak references do

    def record_body(request: Any, **kwargs: Any) -> None:
        if request.body is not None:
            start = request.body.tell()
            source = memoryview(request.body.read(1)).obj
            request.body.seek(start)
            if isinstance(source, mmap.mmap) and not any(ref() is source for ref in mapped):
                mapped.append(weakref.ref(source))
            del source

    size = 2 * KEPT_BUFFER_BYTES  # more parts than the store may keep
    store = small_store(max_concurrency=2)
    store.upload_bytes(f"s3://{bucket}/warm-up", b"x")  # loads botocore's service models first
    store.client.meta.events.register("before-send.s3.UploadPart", record_body)
    tracemalloc.start()
    try:
        with store.open_writer(f"s3://{bucket}/kept.ckpt") as writer:
            writer.write(payload(size))
        kept_bytes = sum(len(buffer) for buffer in (ref() for ref in mapped) if buffer is not None)
        store.close()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        store.close()
    assert writer.stats is not None
    assert writer.stats.bytes == size
    assert mapped or not hasattr(mmap, "MADV_HUGEPAGE"), "no part was sent from a mapped buffer"
    assert 0 < kept_bytes <= KEPT_BUFFER_BYTES or not mapped, f"the store kept {kept_bytes} bytes of buffers"
    assert held < CHUNK, f"{held / CHUNK:.1f} chunks still held by the writer after its store closed"
    alive = [ref for ref in mapped if ref() is not None]
    assert alive == [], f"{len(alive)} mapped part buffers still alive after the store closed"


def test_the_next_upload_through_a_store_refills_the_buffers_of_the_one_before(
    s3_server: MotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = count_new_part_buffers(monkeypatch)
    data = payload(16 * 1024 * 1024)  # a small checkpoint: three planned parts
    with small_store(max_concurrency=4, chunk_size_MB=64) as store:
        for save in range(3):
            with store.open_writer(f"s3://{bucket}/step-{save}.ckpt", expected_size=len(data)) as writer:
                for start in range(0, len(data), 1024 * 1024):
                    writer.write(data[start : start + 1024 * 1024])
            if save == 0:
                first = len(created)
        assert store.download_bytes(f"s3://{bucket}/step-2.ckpt") == data
    assert first == 3
    assert len(created) == first, f"{len(created) - first} fresh buffers in the two saves after the first"


def test_kept_buffers_stay_under_their_limit_largest_first_and_are_taken_by_size() -> None:
    kept = KeptBuffers(limit=10)
    kept.keep([bytearray(4), bytearray(7), bytearray(3)])
    assert kept.kept_bytes == 10  # 7 and 3: the 4 no longer fits
    assert kept.take(8) is None
    taken = kept.take(5)
    assert taken is not None
    assert len(taken) == 7
    assert kept.kept_bytes == 3
    kept.clear()
    assert kept.kept_bytes == 0


def _huge_pages_offered() -> bool:
    setting = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return setting.exists() and "[never]" not in setting.read_text() and hasattr(mmap, "MADV_HUGEPAGE")


def test_a_new_part_buffer_is_backed_by_huge_pages_where_the_kernel_offers_them() -> None:
    if not _huge_pages_offered():
        pytest.skip("this kernel offers no transparent huge pages: part buffers are ordinary memory")
    buffer = new_part_buffer(8 * LARGE_PAGE)
    assert isinstance(buffer, mmap.mmap)
    view = memoryview(buffer)
    view[:] = b"\x01" * len(buffer)  # fault every page in, as filling a part does
    huge_kib = _anon_huge_kib_of(buffer)
    view.release()
    buffer.close()
    assert huge_kib > 0, "the part buffer was faulted in 4 KiB pages"


def _anon_huge_kib_of(buffer: mmap.mmap) -> int:
    """AnonHugePages of the mapping holding ``buffer``, from /proc/self/smaps."""
    first_byte = ctypes.c_char.from_buffer(buffer)
    address = ctypes.addressof(first_byte)
    del first_byte  # the export would keep the mapping from closing
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", pathlib.Path("/proc/self/smaps").read_text()):
        start, end = (int(bound, 16) for bound in block.split(maxsplit=1)[0].split("-"))
        if start <= address < end:
            match = re.search(r"^AnonHugePages:\s+(\d+) kB", block, re.M)
            return int(match.group(1)) if match else 0
    raise AssertionError(f"no mapping holds address {address:#x}")


def test_a_small_part_buffer_is_a_bytearray() -> None:
    assert isinstance(new_part_buffer(LARGE_PAGE - 1), bytearray)


@given(
    length=st.integers(min_value=0, max_value=3 * SEND_PIECE + 7),
    block=st.sampled_from([1, 8192, 128 * 1024, SEND_PIECE, 2 * SEND_PIECE + 1]),
)
@settings(max_examples=25, deadline=None)
def test_a_body_read_block_by_block_as_urllib3_does_gives_back_every_byte_in_order(
    length: int, block: int
) -> None:
    # A drawn length, not st.binary: hypothesis keeps binaries to a few bytes, below one send piece.
    data = payload(length)
    body = BufferBody(memoryview(data))
    pieces = []
    while piece := body.read(block):
        assert len(piece) == min(max(block, SEND_PIECE), len(data) - sum(map(len, pieces)))
        pieces.append(bytes(piece))
    assert b"".join(pieces) == data
    assert body.read(block) == b""


def test_a_small_read_of_a_body_gets_a_send_piece_but_readinto_never_overfills_its_target() -> None:
    data = bytes(range(256)) * (3 * SEND_PIECE // 256)
    body = BufferBody(memoryview(data))
    assert len(body.read(128 * 1024)) == SEND_PIECE
    target = bytearray(100)
    assert body.readinto(target) == 100
    assert bytes(target) == data[SEND_PIECE : SEND_PIECE + 100]
    assert body.read(0) == b""
    body.seek(0)
    assert bytes(body.read()) == data
