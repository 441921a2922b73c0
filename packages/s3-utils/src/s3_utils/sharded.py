"""What a sharded (torch.distributed.checkpoint) checkpoint looks like in S3, told apart without torch.

A sharded checkpoint is a prefix, ``s3://bucket/run/epoch=0-step=100.ckpt/``, holding one shard object
per rank and save and one commit object, ``.metadata``, that the coordinator writes last. A prefix
with the commit is a checkpoint; one without it is an unfinished save whose objects are garbage. This
module owns the commit's name (``s3_checkpoint_io.dcp`` writes it under this name) and the order in
which a sharded checkpoint is deleted: the commit first, so it stops being a checkpoint before any
shard it names goes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from s3_dirpath_utils import join_s3_url, normalize_s3_url

if TYPE_CHECKING:  # checkpoint_names imports this module and stays free of S3 clients
    from s3_utils.store import S3Store

COMMIT_NAME = ".metadata"
"""The commit object of a sharded checkpoint, directly under its prefix."""
SHARD_SUFFIX = ".distcp"
"""How shard objects' names end (as torch's own DCP writer names them)."""

log = logging.getLogger(__name__)


def commit_url(prefix_url: str) -> str:
    """The commit object's URL of the sharded checkpoint at ``prefix_url`` (with or without ``/``)."""
    return join_s3_url(normalize_s3_url(prefix_url).rstrip("/"), COMMIT_NAME)


def checkpoint_of_commit(url: str) -> str | None:
    """The sharded checkpoint a commit object belongs to: its prefix URL without the trailing ``/``.

    Args:
        url: an object's URL or key.

    Returns:
        ``s3://b/run/x.ckpt`` for ``s3://b/run/x.ckpt/.metadata``; None if ``url`` is not a commit.
    """
    head, slash, name = url.rpartition("/")
    if not slash or name != COMMIT_NAME or not head or head.endswith("/"):
        return None
    return head


def is_committed(store: S3Store, prefix_url: str) -> bool:
    """Whether a sharded checkpoint is committed at ``prefix_url`` (its commit object exists)."""
    return store.exists(commit_url(prefix_url))


def delete_sharded_checkpoint(store: S3Store, prefix_url: str) -> int:
    """Delete the sharded checkpoint at ``prefix_url``: its commit first, then every object under it.

    Once the commit is gone the prefix is no longer a checkpoint anywhere (resume discovery, ``s3ckpt
    ls``), so a failure part-way leaves unreferenced shards (``s3ckpt cleanup`` removes them), never a
    checkpoint with missing shards.

    Args:
        store: where to delete.
        prefix_url: ``s3://bucket/run/x.ckpt`` (with or without the trailing ``/``).

    Returns:
        How many objects were deleted, the commit included.

    Raises:
        S3Error: if a delete fails after retries.
    """
    prefix = normalize_s3_url(prefix_url).rstrip("/")
    deleted = 0
    if store.exists(commit_url(prefix)):
        store.delete(commit_url(prefix))
        deleted = 1
    deleted += store.delete_prefix(prefix + "/")
    log.info("deleted sharded checkpoint %s (%d objects)", prefix, deleted)
    return deleted
