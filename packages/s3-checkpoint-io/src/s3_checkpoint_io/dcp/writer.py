"""``S3StorageWriter``: torch.distributed.checkpoint saves straight to S3, committed by one PUT."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import time

from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import StorageWriter, WriteResult
from torch.futures import Future

from s3_checkpoint_io.dcp._layout import (
    METADATA_NAME,
    CheckpointLayout,
    busiest_prefix_ranks,
    check_key_prefix_strategy,
    new_save_id,
    prefix_sharers,
    save_id_of,
    shard_name,
)
from s3_checkpoint_io.dcp._rates import warn_if_over_request_budget
from s3_checkpoint_io.dcp._records import RankGroup, RankTarget
from s3_checkpoint_io.dcp._settings import StoreSettings
from s3_checkpoint_io.dcp._shard_writer import WrittenItem, expected_shard_bytes, write_items
from s3_checkpoint_io.dcp._step_store import StepStore
from s3_checkpoint_io.dcp._stored_items import storage_meta_with_layout
from s3_checkpoint_io.errors import CheckpointExistsError
from s3_utils import S3ClientConfig, S3Error, S3NotFoundError, S3ObjectChangedError, S3Store
from s3_utils.request_rate import sharing_group

log = logging.getLogger(__name__)


class S3StorageWriter(StorageWriter):
    """A DCP ``StorageWriter`` that streams every rank's shard to S3 and commits with one metadata PUT.

    Each rank streams its items into one object, ``<prefix>/__<save_id>_<rank>_<token>.distcp`` (a multipart
    upload fed from tensor memory; a failure aborts it). Once every rank's object is complete, the
    coordinator PUTs ``<prefix>/.metadata``, which names the save id and its shard objects: that
    single PUT is the commit, so a reader sees the previous checkpoint or the new one, never a mix.
    Then it deletes every other shard object under the prefix. One save at a time per prefix.

    The checkpoint is torch's own DCP layout (``.metadata`` is torch's ``Metadata`` with a
    ``_StorageInfo`` per item, tensors encoded as ``torch.save`` streams): a copy on local disk loads with
    torch's ``FileSystemReader`` and converts with ``dcp_to_torch_save``, s3torchconnector's reader
    loads it from S3, and unpickling the metadata needs only torch.

    Args:
        checkpoint_id: ``s3://bucket/prefix`` of the checkpoint; or pass it to ``dcp.save``.
        chunk_size_MB: multipart part size in MiB (5 to 5120).
        max_concurrency: part uploads in flight per rank; memory per rank is about
            ``(max_concurrency + 1) * chunk_size_MB`` MiB beyond the state itself.
        endpoint_url: an S3-compatible endpoint; default from ``AWS_ENDPOINT_URL_S3`` /
            ``AWS_ENDPOINT_URL``, else AWS.
        region: AWS region; default from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``.
        profile: a named AWS profile; default from ``AWS_PROFILE``.
        client_config: a complete ``S3ClientConfig`` instead of the three settings above.
        key_prefix_strategy: ``"rank-hash"`` (default): shard objects under ``<prefix>/<hh>/``, two
            hex digits of a hash of the rank, so that S3 can spread very many ranks over 256
            partitions (the scale benchmark in docs/tuning.md: no SlowDown where "flat" drew two
            refusals per useful request); ``"flat"``: directly under the prefix, as torch's
            ``FileSystemWriter`` lays them out. The coordinator warns
            (``S3RequestRateWarning``) when the ranks writing under one prefix times
            ``max_concurrency`` can exceed S3's 3,500 PUT/s per prefix. Either way each rank's
            uploads are paced from the first request to its fair share of its prefix's rate
            (``client_config``'s ``put_requests_per_prefix_per_s``, S3's figure by default, divided
            by the ranks writing under that prefix; the ranks of one machine pool theirs), so a
            many-rank save does not open with a wave of SlowDown; ``TransferConfig``'s adaptive
            rate still lowers it on SlowDown.
        overwrite: if False, refuse (``CheckpointExistsError``, before any shard is written) to save
            where a checkpoint is already committed; the commit PUT is then ``If-None-Match: *``, so a
            save racing to the same empty prefix also loses. True (the default, as torch's
            ``FileSystemWriter``) replaces a committed checkpoint in one step.

    One ``S3Store`` serves a whole save: opened on first use, closed when the save ends (after the
    commit on the coordinator, after ``write_data`` on the other ranks, or when a step fails).

    Raises:
        ValueError: if ``checkpoint_id`` is not an ``s3://bucket/prefix`` URL or a setting is invalid.
    """

    def __init__(
        self,
        checkpoint_id: str | os.PathLike[str] | None = None,
        *,
        chunk_size_MB: float = 64,
        max_concurrency: int = 10,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        client_config: S3ClientConfig | None = None,
        key_prefix_strategy: str = "rank-hash",
        overwrite: bool = True,
    ) -> None:
        super().__init__()
        self.overwrite = overwrite
        self.key_prefix_strategy = check_key_prefix_strategy(key_prefix_strategy)
        self.settings = StoreSettings.build(
            chunk_size_MB=chunk_size_MB,
            max_concurrency=max_concurrency,
            endpoint_url=endpoint_url,
            region=region,
            profile=profile,
            client_config=client_config,
        )
        self._layout: CheckpointLayout | None = None
        self._is_coordinator = False
        self._save_id: str | None = None
        self._committed_etag: str | None = None
        self._store = StepStore(self.settings)
        self.reset(checkpoint_id)

    def __repr__(self) -> str:
        where = self._layout.prefix_url if self._layout else None
        return f"S3StorageWriter({where!r}, {self.settings.client_config!r})"

    @property
    def layout(self) -> CheckpointLayout:
        """Where the checkpoint's objects are.

        Raises:
            ValueError: if no ``checkpoint_id`` was given, here or to ``dcp.save``.
        """
        if self._layout is None:
            raise ValueError(
                "S3StorageWriter has no checkpoint_id: pass s3://bucket/prefix to it or to dcp.save"
            )
        return self._layout

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        """Start a new save, at ``checkpoint_id`` if given (else where the last one went)."""
        if checkpoint_id is not None:
            self._layout = CheckpointLayout.parse(checkpoint_id, "S3StorageWriter checkpoint_id")
        self._save_id = None
        self._store.close()  # an earlier save that failed before its end left it open

    def set_up_storage_writer(self, is_coordinator: bool, *args: object, **kwargs: object) -> None:
        """Remember whether this rank commits the save."""
        self._is_coordinator = is_coordinator

    def storage_meta(self) -> StorageMeta | None:
        """The checkpoint's URL, recorded in the metadata."""
        return StorageMeta(checkpoint_id=self.layout.prefix_url)

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        """Tell the coordinator which machine's request-rate state this rank shares (it counts the
        ranks writing under each prefix, and those of them on each machine, to pace them)."""
        if not self.settings.transfer_config.adaptive_request_rate:
            return plan
        return dataclasses.replace(plan, storage_data=RankGroup(sharing_group()))

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        """Choose this save's id and tell every rank the shard object it writes."""
        warn_if_over_request_budget(
            busiest_prefix_ranks(len(plans), self.key_prefix_strategy),
            self.settings.transfer_config.max_concurrency,
            "PUT",
            f"S3StorageWriter(max_concurrency=..., key_prefix_strategy={self.key_prefix_strategy!r})",
        )
        self._save_id = new_save_id()
        try:
            self._committed_etag = self._read_committed_etag()
        except BaseException:
            self._store.close()
            raise
        if self._committed_etag is not None and not self.overwrite:
            self._store.close()
            raise CheckpointExistsError(
                f"{self.layout.prefix_url} already holds a committed checkpoint and this S3StorageWriter has "
                "overwrite=False: save to another checkpoint_id, delete it first (s3ckpt rm), or pass "
                "overwrite=True"
            )
        sharers = self._prefix_sharers(plans)
        return [
            dataclasses.replace(
                plan, storage_data=RankTarget(self._save_id, rank, *sharers.get(rank, (0, 0)))
            )
            for rank, plan in enumerate(plans)
        ]

    def _prefix_sharers(self, plans: list[SavePlan]) -> dict[int, tuple[int, int]]:
        """rank -> (ranks writing under its prefix, those on its machine), for the ranks that write a
        shard; empty where a rank's group is unknown (another planner dropped it): nothing is paced."""
        groups: dict[int, str] = {}
        for rank, plan in enumerate(plans):
            if not plan.items:
                continue
            if not isinstance(plan.storage_data, RankGroup):
                return {}
            groups[rank] = plan.storage_data.name
        return prefix_sharers(groups, self.key_prefix_strategy)

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        """Stream this rank's items into its shard object; it exists once this returns.

        Returns:
            A completed future of one result per item.

        Raises:
            ValueError: if the plan did not come through :meth:`prepare_global_plan`.
            S3Error: if the upload fails; it is aborted and no shard object is left.
        """
        target = plan.storage_data
        if not isinstance(target, RankTarget):
            raise ValueError("S3StorageWriter got a save plan it did not prepare: save through dcp.save")
        try:
            results = self._write_shard(target, plan, planner)
        except BaseException:
            self._store.close()  # the save fails: DCP does not call finish
            raise
        if not self._is_coordinator:
            self._store.close()  # this rank's part of the save is done
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def _write_shard(self, target: RankTarget, plan: SavePlan, planner: SavePlanner) -> list[WriteResult]:
        """Upload this rank's items as one shard object (none if it has no items)."""
        if not plan.items:
            return []
        name = shard_name(target.save_id, target.rank, self.key_prefix_strategy)
        started = time.monotonic()
        url, size_hint = self.layout.url_of(name), expected_shard_bytes(plan.items)
        store = self._store.get()
        with self._paced(store, url, target), store.open_writer(url, expected_size=size_hint) as out:
            results = write_items(out, name, plan.items, planner)
        size = sum(result.size_in_bytes for result in results)
        seconds = time.monotonic() - started
        mib = size / 2**20
        log.info(
            "DCP shard %s: %.1f MiB in %.2f s (%.1f MiB/s)", name, mib, seconds, mib / max(seconds, 1e-9)
        )
        return results

    @staticmethod
    def _paced(store: S3Store, url: str, target: RankTarget) -> contextlib.AbstractContextManager[None]:
        """Pace the shard's upload to this machine's share of its prefix, when the coordinator counted
        the ranks writing under it."""
        if not target.local_writers:
            return contextlib.nullcontext()
        return store.share_prefix(url, writers=target.writers, local_writers=target.local_writers)

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """Commit: PUT the metadata naming this save's shards, then delete every other shard object.

        DCP calls this on the coordinator only after every rank's ``write_data`` succeeded, so every
        shard object the metadata names is complete.

        Raises:
            ValueError: if a rank wrote under another save id (DCP's plan caching replayed an old
                plan); nothing is committed.
            S3ObjectChangedError: if another save committed at the prefix since this one began (the
                metadata PUT is conditional: ``If-Match`` on the ETag read when the save was planned,
                ``If-None-Match: *`` when nothing was committed); this save's shards are deleted.
            S3Error: if the metadata PUT fails; the previous checkpoint (if any) stays committed.
        """
        try:
            self._commit(metadata, results)
        finally:
            self._store.close()

    def _commit(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """:meth:`finish` with the save's store."""
        if self._save_id is None:
            raise ValueError(
                "S3StorageWriter.finish ran without prepare_global_plan: call it through dcp.save"
            )
        written: dict[object, WrittenItem] = {}
        for rank_results in results:
            for result in rank_results:
                written[result.index] = result.storage_data
        names = tuple(sorted({item.info.relative_path for item in written.values()}))
        stale = [name for name in names if save_id_of(name) != self._save_id]
        if stale:
            raise ValueError(
                f"S3StorageWriter: ranks wrote {stale} under an old save id, so nothing was committed at "
                f"{self.layout.prefix_url}; DCP's plan caching (enable_plan_caching=True) replays old plans "
                "and is not supported: create the planner without it"
            )
        raw_offsets: dict[str, dict[int, int]] = {}
        for item in written.values():
            if item.raw_offset is not None:
                raw_offsets.setdefault(item.info.relative_path, {})[item.info.offset] = item.raw_offset
        metadata.storage_data = {index: item.info for index, item in written.items()}
        metadata.storage_meta = storage_meta_with_layout(
            metadata.storage_meta or self.storage_meta(), self._save_id, raw_offsets
        )
        store = self._store.get()
        try:
            store.put_if_unchanged(
                self.layout.metadata_url, pickle.dumps(metadata), expected_etag=self._committed_etag
            )
        except S3ObjectChangedError as exc:
            self._delete_shards(store, names)
            raise S3ObjectChangedError(
                f"{self.layout.prefix_url}: another save committed here while this one ran, so this save "
                f"(save {self._save_id}) was not committed and its shards were deleted; the other "
                f"save's checkpoint stands. Run one save at a time per prefix. ({exc})"
            ) from exc
        log.info(
            "DCP checkpoint committed: %s (save %s, %d shards)",
            self.layout.prefix_url,
            self._save_id,
            len(names),
        )
        self._delete_unreferenced_shards(store, set(names))

    def _read_committed_etag(self) -> str | None:
        """The ETag of the committed metadata (None: nothing committed), for the conditional commit."""
        try:
            return self._store.get().head(self.layout.metadata_url).etag
        except S3NotFoundError:
            return None

    def _delete_shards(self, store: S3Store, names: tuple[str, ...]) -> None:
        """Best effort: delete this save's shard objects after it lost the race to commit."""
        for name in names:
            try:
                store.delete(self.layout.url_of(name))
            except S3Error as exc:
                log.warning("could not delete the uncommitted shard %s: %s", self.layout.url_of(name), exc)

    def _delete_unreferenced_shards(self, store: S3Store, keep: set[str]) -> None:
        """Delete the shard objects under the prefix that the commit does not name (older saves',
        failed saves' strays); a failure only logs: the commit stands and the next save retries."""
        try:
            shards, nested = {}, set()
            for info in store.iter_objects(self.layout.prefix_url + "/"):
                name = self.layout.name_of(info.key)
                if name is not None and save_id_of(name) is not None and name not in keep:
                    shards[name] = info.url
                elif name is not None and name.endswith("/" + METADATA_NAME):
                    nested.add(name.rsplit("/", 1)[0])  # another checkpoint below this one: not ours
            for name, url in shards.items():
                if name.rsplit("/", 1)[0] not in nested:
                    store.delete(url)
        except S3Error as exc:
            log.warning(
                "DCP checkpoint %s committed, but deleting unreferenced shards failed: %s",
                self.layout.prefix_url,
                exc,
            )

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """True for the ``s3://bucket/prefix`` URLs this writer takes (DCP picks it for them)."""
        return CheckpointLayout.is_valid(checkpoint_id)
