"""Writers and readers of sharded checkpoints from every tool that speaks DCP, for the interop tests.

Each peer is built here, against the test server, the way a user would build it: ours
(``s3_checkpoint_io.dcp``, flat or rank-hash keys), torch's ``FileSystemWriter``/``FileSystemReader`` on
a local folder, torch's ``FsspecWriter`` over s3fs, and s3torchconnector's ``S3StorageWriter``/
``S3StorageReader``. ``save`` and ``load`` are rank targets (see ``support.ranks``): a ``DTensor`` sharded
over the ranks plus replicated and rank-own keys, as ``dcp_rank_targets`` saves them, so a load on
another number of ranks reshards.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from checkpoint_io.dcp.dcp_rank_targets import SAVED_RANKS, full_tensor, plain_state
from support.ranks import init_process_group

WRITERS = ("ours", "ours-rank-hash", "torch", "fsspec", "s3torch")
READERS = ("ours", "torch", "s3torch")


def writer(kind: str, location: str, endpoint_url: str) -> StorageWriter:
    """A storage writer of ``kind`` (one of :data:`WRITERS`) saving to ``location`` (an ``s3://`` prefix,
    or a local folder for ``"torch"``) on the S3 endpoint ``endpoint_url``."""
    if kind in ("ours", "ours-rank-hash"):
        from s3_checkpoint_io.dcp import S3StorageWriter

        strategy = "rank-hash" if kind == "ours-rank-hash" else "flat"
        return S3StorageWriter(
            location, chunk_size_MB=5, endpoint_url=endpoint_url, key_prefix_strategy=strategy
        )
    if kind == "torch":
        return FileSystemWriter(location)
    if kind == "fsspec":
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter

        # s3fs takes the endpoint through botocore's client arguments (a storage option)
        return FsspecWriter(location, client_kwargs={"endpoint_url": endpoint_url})
    if kind == "s3torch":
        from s3torchconnector.dcp import S3StorageWriter as S3TorchWriter

        side = S3TorchWriter(os.environ["AWS_REGION"], location, s3client_config=_s3torch_config())
        _point_s3torch_at(side, location, endpoint_url)
        return side
    raise ValueError(f"unknown writer kind {kind!r}: one of {WRITERS}")


def reader(kind: str, location: str, endpoint_url: str) -> StorageReader:
    """A storage reader of ``kind`` (one of :data:`READERS`) loading from ``location``."""
    if kind == "ours":
        from s3_checkpoint_io.dcp import S3StorageReader

        return S3StorageReader(location, endpoint_url=endpoint_url)
    if kind == "torch":
        return FileSystemReader(location)
    if kind == "s3torch":
        from s3torchconnector.dcp import S3StorageReader as S3TorchReader

        side = S3TorchReader(os.environ["AWS_REGION"], location, s3client_config=_s3torch_config())
        _point_s3torch_at(side, location, endpoint_url)
        return side
    raise ValueError(f"unknown reader kind {kind!r}: one of {READERS}")


def _s3torch_config() -> Any:
    from s3torchconnector import S3ClientConfig

    return S3ClientConfig(force_path_style=True)


def _point_s3torch_at(side: Any, location: str, endpoint_url: str) -> None:
    """s3torchconnector's DCP classes take no endpoint: give them a file system whose client has one
    (as bench/runners/dcp_runner.py does; checked on s3torchconnector 1.5.0)."""
    from s3torchconnector._s3client import S3Client
    from s3torchconnector.dcp.s3_file_system import S3FileSystem

    region = os.environ["AWS_REGION"]
    client = S3Client(region, endpoint=endpoint_url, s3client_config=_s3torch_config())
    side.fs = S3FileSystem(
        region, s3_client=client, reader_constructor=getattr(side, "_reader_constructor", None)
    )
    side.path = side.fs.init_path(location)


def mesh_state(version: int, template: bool) -> dict[str, Any]:
    """This rank's state of save ``version``: the DTensor sharded over every rank, the replicated tensor,
    ``rank<r>.own`` of this rank only (of every saved rank as zeros for a template), and ``step``."""
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    expected = plain_state(version)
    state: dict[str, Any] = {
        "sharded": distribute_tensor(
            torch.zeros_like(full_tensor(version)) if template else full_tensor(version), mesh, [Shard(0)]
        ),
        "replicated": torch.zeros(3) if template else expected["replicated"],
        "step": -1 if template else version,
    }
    if template:
        state.update({f"rank{r}.own": torch.zeros(5) for r in range(SAVED_RANKS)})
    else:
        state[f"rank{rank}.own"] = expected[f"rank{rank}.own"]
    return state


def save(kind: str, location: str, version: str, endpoint_url: str) -> None:
    """Rank target: every rank saves its part of ``version`` with the writer ``kind``."""
    init_process_group(timeout_s=60)
    dcp.save(mesh_state(int(version), template=False), storage_writer=writer(kind, location, endpoint_url))
    _leave()


def load(kind: str, location: str, version: str, out_dir: str, endpoint_url: str) -> None:
    """Rank target: every rank loads ``version`` with the reader ``kind`` into a DTensor sharded over this
    number of ranks and writes what matched to ``<out_dir>/rank<r>.json``."""
    init_process_group(timeout_s=60)
    state = mesh_state(int(version), template=True)
    dcp.load(state, storage_reader=reader(kind, location, endpoint_url))
    expected = plain_state(int(version))
    checks = {
        "sharded": bool(torch.equal(state["sharded"].full_tensor(), expected["sharded"])),
        "replicated": bool(torch.equal(state["replicated"], expected["replicated"])),
        "own": all(torch.equal(state[f"rank{r}.own"], expected[f"rank{r}.own"]) for r in range(SAVED_RANKS)),
        "step": state["step"] == int(version),
    }
    pathlib.Path(out_dir, f"rank{dist.get_rank()}.json").write_text(json.dumps(checks))
    dist.barrier()
    _leave()


def _leave() -> None:
    """Leave the process group (the rank harness then ends the process with ``os._exit``, see
    ``support.ranks``)."""
    dist.destroy_process_group()


def load_in_one_process(storage_reader: StorageReader, version: int) -> dict[str, Any]:
    """Load the whole checkpoint of ``version`` as plain tensors, without a process group."""
    state = {
        key: torch.zeros_like(value) if isinstance(value, torch.Tensor) else -1
        for key, value in plain_state(version).items()
    }
    dcp.load(state, storage_reader=storage_reader)
    return state


def assert_same_state(state: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every key of ``expected`` is in ``state`` with an equal value (tensors: same dtype and elements)."""
    assert state.keys() == expected.keys(), (sorted(state), sorted(expected))
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_same_state(state[key], value)
        elif isinstance(value, torch.Tensor):
            assert state[key].dtype == value.dtype, key
            assert torch.equal(state[key], value), key
        else:
            assert state[key] == value, key


def upload_folder(s3_client: Any, folder: pathlib.Path, bucket: str, prefix: str) -> list[str]:
    """Put every file under ``folder`` at ``<prefix>/<its path relative to folder>``, object by object
    (the commit last); returns the keys written."""
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    files.sort(key=lambda path: path.name == ".metadata")
    keys = []
    for path in files:
        key = f"{prefix}/{path.relative_to(folder).as_posix()}"
        s3_client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        keys.append(key)
    return keys
