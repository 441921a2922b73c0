"""``S3StorageReader``: torch.distributed.checkpoint loads of a committed checkpoint from S3."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
import time
import uuid

import torch.distributed as dist
from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner
from torch.distributed.checkpoint.storage import StorageReader
from torch.futures import Future

from s3_checkpoint_io.dcp._broadcast import LoadGroup, group_for, read_once
from s3_checkpoint_io.dcp._layout import CheckpointLayout
from s3_checkpoint_io.dcp._rates import warn_if_over_request_budget
from s3_checkpoint_io.dcp._records import LoadInstruction, NodeMemory, SharedFile
from s3_checkpoint_io.dcp._replicated_plan import plan_shared_files
from s3_checkpoint_io.dcp._replicated_reads import read_and_share
from s3_checkpoint_io.dcp._settings import StoreSettings
from s3_checkpoint_io.dcp._shard_reader import read_items
from s3_checkpoint_io.dcp._shared_memory import node_memory
from s3_checkpoint_io.dcp._step_store import StepStore
from s3_checkpoint_io.dcp._stored_items import CommittedCheckpoint, committed_checkpoint
from s3_checkpoint_io.dcp._torch_load_frame import group_of_running_load
from s3_checkpoint_io.errors import CorruptCheckpointError
from s3_utils import S3ClientConfig, S3NotFoundError, S3ObjectChangedError

log = logging.getLogger(__name__)


class S3StorageReader(StorageReader):
    """A DCP ``StorageReader`` for every DCP checkpoint on S3.

    It loads what :class:`S3StorageWriter` writes (and wrote in its first release), and stock DCP
    checkpoints: torch's ``FileSystemWriter`` output uploaded to S3 (``s3ckpt cp``), torch's
    ``FsspecWriter`` over s3fs, and s3torchconnector's ``S3StorageWriter``.

    The coordinator of the load GETs ``<prefix>/.metadata`` once and broadcasts it over the process
    group of the load (one GET per load, not one per rank; see ``docs/sharded.md`` for when every
    rank reads it instead): ``process_group`` when given, else the group ``dcp.load`` uses, read from
    its call (:mod:`s3_checkpoint_io.dcp._torch_load_frame`, which logs a warning once if a torch
    release hides it). Then each rank reads only the byte ranges of the shard objects that its
    part of the load needs, with parallel ranged GETs across objects, straight into the destination
    tensors where it can. Ranks may differ in number from the save (DCP reshards). The coordinator
    checks that all ranks read the same commit, so a load racing an overwrite fails rather than mixing
    two saves.

    Items that several ranks of a node load (a DDP model loaded on every rank, HSDP's replicated
    parameters and optimizer state) are read from S3 once per node: the coordinator gives each to one
    of the node's ranks that want it (balancing the bytes each rank reads), that rank reads it into a
    node-local shared-memory file (``/dev/shm``), and the node's other ranks copy it out from there,
    whatever the backend (gloo, NCCL); nothing travels between nodes. If that rank's read fails,
    every rank of the load raises an error naming it; if it dies, the others fail when the backend
    sees its connection close; no file is left behind either way. A node without room in
    ``/dev/shm`` (or without one) reads as with ``share_replicated=False``: every rank reads all its
    items itself. The checkpoint's format is the same either way.

    The metadata is unpickled: load only checkpoints you trust, as with ``torch.load``.

    One ``S3Store`` serves a whole load: opened on first use, closed when ``read_data`` ends (or when
    reading the metadata fails).

    Args:
        checkpoint_id: ``s3://bucket/prefix`` of the checkpoint; or pass it to ``dcp.load``.
        chunk_size_MB: ranged-GET size in MiB (5 to 5120).
        max_concurrency: ranged GETs in flight per rank.
        endpoint_url: an S3-compatible endpoint; default from the ``AWS_*`` environment, else AWS.
        region: AWS region; default from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``.
        profile: a named AWS profile; default from ``AWS_PROFILE``.
        client_config: a complete ``S3ClientConfig`` instead of the three settings above.
        process_group: the process group of the ``dcp.load`` calls this reader serves (the group given
            to ``dcp.load(process_group=...)``, ``torch.distributed.group.WORLD`` for the default
            group): its rank 0 GETs the metadata and broadcasts it over it. Default: the group is
            found from the running ``dcp.load``.
        share_replicated: read each item that several ranks of a node load once and share it through
            the node's shared memory (default); False: every rank reads every item it loads from S3.

    Raises:
        ValueError: if ``checkpoint_id`` is not an ``s3://bucket/prefix`` URL or a setting is invalid.
    """

    def __init__(
        self,
        checkpoint_id: str | os.PathLike[str] | None = None,
        *,
        chunk_size_MB: float = 64,
        max_concurrency: int = 15,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        client_config: S3ClientConfig | None = None,
        process_group: dist.ProcessGroup | None = None,
        share_replicated: bool = True,
    ) -> None:
        super().__init__()
        self.settings = StoreSettings.build(
            chunk_size_MB=chunk_size_MB,
            max_concurrency=max_concurrency,
            endpoint_url=endpoint_url,
            region=region,
            profile=profile,
            client_config=client_config,
        )
        self._process_group = process_group
        self.share_replicated = share_replicated
        self._group: LoadGroup | None = None
        self._layout: CheckpointLayout | None = None
        self._commit: CommittedCheckpoint | None = None
        self.bytes_read = 0
        """Shard bytes this rank downloaded in its last ``read_data`` (the metadata not counted)."""
        self._store = StepStore(self.settings)
        self.reset(checkpoint_id)

    def __repr__(self) -> str:
        where = self._layout.prefix_url if self._layout else None
        return f"S3StorageReader({where!r}, {self.settings.client_config!r})"

    @property
    def layout(self) -> CheckpointLayout:
        """Where the checkpoint's objects are.

        Raises:
            ValueError: if no ``checkpoint_id`` was given, here or to ``dcp.load``.
        """
        if self._layout is None:
            raise ValueError(
                "S3StorageReader has no checkpoint_id: pass s3://bucket/prefix to it or to dcp.load"
            )
        return self._layout

    @property
    def commit(self) -> CommittedCheckpoint:
        """The commit read by :meth:`read_metadata` or given to :meth:`set_up_storage_reader`."""
        if self._commit is None:
            raise ValueError("S3StorageReader has read no metadata yet: load through dcp.load")
        return self._commit

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        """Start a new load, of ``checkpoint_id`` if given (else of the last one)."""
        if checkpoint_id is not None:
            self._layout = CheckpointLayout.parse(checkpoint_id, "S3StorageReader checkpoint_id")
        self._commit = None
        self._group = None
        self._store.close()  # an earlier load that failed before read_data left it open

    def read_metadata(self) -> Metadata:
        """GET (on the load's coordinator, then broadcast) and unpickle the committed metadata.

        Returns:
            DCP's metadata of the committed save.

        Raises:
            S3NotFoundError: if nothing was committed at the prefix (no ``.metadata`` object).
            CorruptCheckpointError: if the object is not DCP metadata whose items this reader can find.
        """
        given = self._process_group
        # group_of_running_load is called from here: it searches the stack up from this frame
        group = group_for(given) if given is not None else group_of_running_load()
        self._group = group  # read_data shares replicated items over it
        raw = read_once(self._download_metadata, group)
        try:
            metadata = pickle.loads(raw)
        except Exception as exc:
            raise CorruptCheckpointError(
                f"{self.layout.metadata_url} is not readable DCP metadata ({type(exc).__name__}: {exc}); "
                "is this prefix a DCP checkpoint?"
            ) from exc
        self._commit = committed_checkpoint(metadata, self.layout.metadata_url)
        return metadata  # type: ignore[no-any-return]

    def _download_metadata(self) -> bytearray:
        """GET the metadata object with this load's store (closed if the GET fails: so does the load).

        Raises:
            S3NotFoundError: saying that nothing was committed at the prefix.
        """
        try:
            return self._store.get().download_bytes(self.layout.metadata_url)
        except S3NotFoundError as exc:
            self._store.close()
            raise S3NotFoundError(
                f"no committed checkpoint at {self.layout.prefix_url}: {exc}. Check the checkpoint_id; a "
                "save that did not finish commits nothing"
            ) from exc
        except BaseException:
            self._store.close()
            raise

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: object, **kwargs: object
    ) -> None:
        """Find where every item of ``metadata`` is stored.

        Raises:
            CorruptCheckpointError: if ``metadata`` does not say where its items are.
        """
        self._commit = committed_checkpoint(metadata, self.layout.metadata_url)

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        """Tell the coordinator which node-local shared memory this rank sees (to share replicated
        items through it)."""
        if not self.share_replicated:
            return plan
        return dataclasses.replace(plan, storage_data=node_memory())

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        """Send every rank the save id the coordinator read, to check against its own, and the
        shared-memory files that share the items several ranks of a node load; warn if the ranks'
        ranged GETs can exceed S3's request rate on one prefix."""
        prefixes = {name.rpartition("/")[0] for name in self.commit.shard_names} or {""}
        warn_if_over_request_budget(
            math.ceil(len(plans) / len(prefixes)),
            self.settings.transfer_config.max_concurrency,
            "GET",
            "S3StorageReader(max_concurrency=...)",
        )
        shared: tuple[SharedFile, ...] = ()
        if self.share_replicated and self._group is not None and len(plans) > 1:
            nodes = [  # a rank whose plan says nothing of its node reads all it loads
                plan.storage_data
                if isinstance(plan.storage_data, NodeMemory)
                else NodeMemory(f"rank {rank}", 0)
                for rank, plan in enumerate(plans)
            ]
            shared = plan_shared_files(plans, nodes, self.commit.items, uuid.uuid4().hex)
        instruction = LoadInstruction(self.commit.save_id, shared)
        return [dataclasses.replace(plan, storage_data=instruction) for plan in plans]

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        """Download what ``plan`` needs and copy it into the state dict.

        Returns:
            A completed future.

        Raises:
            S3ObjectChangedError: if this rank read another commit than the coordinator (the
                checkpoint was overwritten during the load): load again.
            S3NotFoundError: if a shard object is missing (deleted by an overwrite meanwhile).
        """
        instruction = plan.storage_data
        if isinstance(instruction, LoadInstruction) and instruction.save_id != self.commit.save_id:
            raise S3ObjectChangedError(
                f"{self.layout.metadata_url} was overwritten during the load (this rank read save "
                f"{self.commit.save_id}, the coordinator {instruction.save_id}); load again"
            )
        shared = instruction.shared if isinstance(instruction, LoadInstruction) else ()
        started = time.monotonic()
        try:
            store = self._store.get()
            if shared:
                if self._group is None:
                    raise RuntimeError(
                        "S3StorageReader: a plan with shared files reached a load with no group"
                    )
                size = read_and_share(
                    store,
                    self.layout,
                    plan.items,
                    self.commit.items,
                    planner,
                    shared=shared,
                    group=self._group,
                )
            else:
                size = read_items(store, self.layout, plan.items, self.commit.items, planner)
        finally:
            self._store.close()  # this rank's part of the load is done
        self.bytes_read = size
        seconds = time.monotonic() - started
        mib = size / 2**20
        log.info(
            "DCP load of %s: %.1f MiB in %.2f s (%.1f MiB/s)",
            self.layout.prefix_url,
            mib,
            seconds,
            mib / max(seconds, 1e-9),
        )
        future: Future[None] = Future()
        future.set_result(None)
        return future

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """True for the ``s3://bucket/prefix`` URLs this reader takes (DCP picks it for them)."""
        return CheckpointLayout.is_valid(checkpoint_id)
