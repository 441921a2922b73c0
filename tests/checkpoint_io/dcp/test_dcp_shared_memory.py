"""The node-local shared-memory files replicated items of a sharded load go through (real /dev/shm)."""

from __future__ import annotations

import os
import uuid

import pytest

from s3_checkpoint_io.dcp import _shared_memory


def test_a_file_written_by_one_mapping_reads_the_same_in_another_after_its_name_is_gone() -> None:
    name = uuid.uuid4().hex
    writer = _shared_memory.create(name, 8192)
    try:
        writer[100:105] = b"hello"
        writer.close()
        reader = _shared_memory.open_mapped(name, 8192)
        _shared_memory.remove([name])
        assert not os.path.exists(_shared_memory.path_of(name))
        assert reader[100:105] == b"hello"  # the mapping outlives the name
        reader[0:2] = b"xx"  # copy-on-write: a receiver never changes what the others read
        assert _shared_memory.node_memory().free_bytes > 0
    finally:
        _shared_memory.remove([name])
    _shared_memory.remove([name])  # removing what is gone is no error (every rank removes on failure)


def test_a_name_is_never_reused_and_a_file_of_another_size_is_refused() -> None:
    name = uuid.uuid4().hex
    _shared_memory.create(name, 4096).close()
    try:
        with pytest.raises(FileExistsError):
            _shared_memory.create(name, 4096)
        with pytest.raises(OSError, match="holds 4096 bytes, the load planned 8192"):
            _shared_memory.open_mapped(name, 8192)
        with pytest.raises(FileNotFoundError):
            _shared_memory.open_mapped(uuid.uuid4().hex, 4096)
    finally:
        _shared_memory.remove([name])
    assert not os.path.exists(_shared_memory.path_of(name))
