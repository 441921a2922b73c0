"""One ``S3Store`` per DCP save and per load, closed at its end; pickled and forked writers open their own."""

from __future__ import annotations

import multiprocessing
import pickle
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from s3_checkpoint_io.dcp import S3StorageReader, S3StorageWriter
from s3_checkpoint_io.dcp._settings import StoreSettings
from s3_utils import S3Store

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


class _OpenedStores:
    """Records every store the DCP writer and reader open, to count them and see them closed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.stores: list[S3Store] = []
        original = StoreSettings.open_store

        def recording_open_store(settings: StoreSettings) -> S3Store:
            store = original(settings)
            self.stores.append(store)
            return store

        monkeypatch.setattr(StoreSettings, "open_store", recording_open_store)

    def all_closed(self) -> bool:
        return all(store._closed for store in self.stores)


def _state(value: float) -> dict[str, Any]:
    return {"weight": torch.full((32, 8), value), "step": int(value)}


def _load(url: str, endpoint_url: str) -> dict[str, Any]:
    state: dict[str, Any] = {"weight": torch.zeros(32, 8), "step": -1}
    dcp.load(state, storage_reader=S3StorageReader(url, endpoint_url=endpoint_url))
    return state


def test_a_save_and_a_load_each_open_one_store_and_close_it_at_their_end(
    bucket: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{bucket}/one-store"
    opened = _OpenedStores(monkeypatch)
    writer = S3StorageWriter(url, endpoint_url=s3_server.endpoint_url)

    dcp.save(_state(1.0), storage_writer=writer)
    assert len(opened.stores) == 1
    assert opened.all_closed()
    dcp.save(_state(2.0), storage_writer=writer)  # the writer reused: a fresh store for the new save
    assert len(opened.stores) == 2
    assert opened.all_closed()

    loaded = _load(url, s3_server.endpoint_url)
    assert len(opened.stores) == 3
    assert opened.all_closed()
    assert torch.equal(loaded["weight"], torch.full((32, 8), 2.0))
    assert loaded["step"] == 2


def test_a_failed_save_or_load_closes_its_store(
    bucket: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{bucket}/fails"
    dcp.save(_state(1.0), storage_writer=S3StorageWriter(url, endpoint_url=s3_server.endpoint_url))
    opened = _OpenedStores(monkeypatch)
    refusing = S3StorageWriter(url, endpoint_url=s3_server.endpoint_url, overwrite=False)
    with pytest.raises(CheckpointException, match="already holds a committed checkpoint"):
        dcp.save(_state(2.0), storage_writer=refusing)
    with pytest.raises(CheckpointException, match="no committed checkpoint"):
        _load(f"s3://{bucket}/nothing-here", s3_server.endpoint_url)
    assert len(opened.stores) == 2
    assert opened.all_closed()


def test_a_pickled_writer_and_reader_save_and_load_with_their_own_store(bucket: str, s3_server: Any) -> None:
    url = f"s3://{bucket}/pickled"
    writer = S3StorageWriter(url, endpoint_url=s3_server.endpoint_url)
    dcp.save(_state(1.0), storage_writer=writer)
    copy = pickle.loads(pickle.dumps(writer))
    dcp.save(_state(3.0), storage_writer=copy)
    reader = pickle.loads(pickle.dumps(S3StorageReader(url, endpoint_url=s3_server.endpoint_url)))
    state: dict[str, Any] = {"weight": torch.zeros(32, 8), "step": -1}
    dcp.load(state, storage_reader=reader)
    assert state["step"] == 3


def _save_in_child(writer: S3StorageWriter) -> None:
    dcp.save(_state(4.0), storage_writer=writer)


def test_a_forked_child_saves_with_a_store_of_its_own(bucket: str, s3_server: Any) -> None:
    url = f"s3://{bucket}/forked"
    writer = S3StorageWriter(url, endpoint_url=s3_server.endpoint_url)
    writer.reset(url)
    store = writer._store.get()  # open in the parent, as a save in progress would have it
    child = multiprocessing.get_context("fork").Process(target=_save_in_child, args=(writer,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert writer._store.get() is store  # the parent's store is untouched by the child
    writer._store.close()
    assert _load(url, s3_server.endpoint_url)["step"] == 4
