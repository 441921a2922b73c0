"""``MemoryFile``: an in-memory file a download fills through one mapping and ``torch.load`` maps again."""

from __future__ import annotations

import ctypes
import mmap

import pytest

from s3_checkpoint_io.engine.load import MAPPED_LOAD_MIN_BYTES, download_target
from s3_checkpoint_io.engine.memory_file import MemoryFile, memory_files_supported

pytestmark = pytest.mark.skipif(not memory_files_supported(), reason="in-memory files are Linux-only")


def test_address_is_where_the_buffer_bytes_are() -> None:
    with MemoryFile(3 * mmap.PAGESIZE + 5) as file:
        view = file.buffer()
        view[-5:] = b"hello"
        view[:3] = b"abc"
        assert ctypes.string_at(file.address, 3) == b"abc"
        assert ctypes.string_at(file.address + file.size - 5, 5) == b"hello"
        view.release()


def test_release_frees_whole_pages_inside_the_range_only() -> None:
    page = mmap.PAGESIZE
    with MemoryFile(4 * page) as file:
        view = file.buffer()
        view[:] = b"\x01" * (4 * page)
        file.release(page // 2, 2 * page)  # whole page 1 only: pages 0 and 2 hold bytes outside
        assert bytes(view[page : 2 * page]) == b"\0" * page
        assert bytes(view[:page]) == b"\x01" * page
        assert bytes(view[2 * page :]) == b"\x01" * (2 * page)
        view.release()


def test_offset_at_finds_another_mapping_of_the_same_file() -> None:
    with MemoryFile(2 * mmap.PAGESIZE) as file, open(file.path, "r+b") as reopened:
        other = mmap.mmap(reopened.fileno(), file.size)  # as torch.load(mmap=True) maps it
        anchor = ctypes.c_char.from_buffer(other)
        other_start = ctypes.addressof(anchor)
        del anchor
        try:
            assert other_start != file.address
            assert file.offset_at(other_start + 10) == 10
            elsewhere = ctypes.create_string_buffer(8)
            assert file.offset_at(ctypes.addressof(elsewhere)) is None
        finally:
            other.close()


def test_an_empty_file_has_an_address_and_a_path() -> None:
    with MemoryFile(0) as file:
        assert file.address != 0
        assert file.buffer().nbytes == 0


def test_a_checkpoint_is_downloaded_into_a_memory_file_from_the_mapped_load_size_on() -> None:
    below = download_target(MAPPED_LOAD_MIN_BYTES - 1)
    assert type(below) is bytearray
    assert len(below) == MAPPED_LOAD_MIN_BYTES - 1
    at = download_target(MAPPED_LOAD_MIN_BYTES)
    assert isinstance(at, MemoryFile)
    assert at.size == MAPPED_LOAD_MIN_BYTES
    at.close()
