"""Where a sharded checkpoint's objects live under its prefix, and how their names carry the save id.

    <prefix>/.metadata                    the commit: DCP's Metadata, naming the save id it belongs to
    <prefix>/__<save_id>_<rank>_<token>.distcp    one object per rank per save

The save id and a token each rank draws make every shard name new: a save never overwrites an object
that a committed checkpoint uses, even when a stale plan (DCP's plan caching) repeats a save id.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass

from s3_dirpath_utils import join_s3_url, parse_s3_url, require_s3_url
from s3_utils.sharded import COMMIT_NAME

METADATA_NAME = COMMIT_NAME
_SHARD_NAME = re.compile(r"__(?P<save_id>[0-9a-f]{32})_(?P<rank>\d+)_[0-9a-f]{8}\.distcp")


def new_save_id() -> str:
    """A fresh, unique save id (chosen once per save, on the coordinator)."""
    return uuid.uuid4().hex


def shard_name(save_id: str, rank: int) -> str:
    """A new name (relative to the prefix) for ``rank``'s shard object in save ``save_id``."""
    return f"__{save_id}_{rank}_{uuid.uuid4().hex[:8]}.distcp"


def save_id_of(name: str) -> str | None:
    """The save id in a shard object's name, or None if ``name`` is not a shard object's name."""
    match = _SHARD_NAME.fullmatch(name)
    return match.group("save_id") if match else None


@dataclass(frozen=True)
class CheckpointLayout:
    """The objects of one checkpoint, from its ``s3://bucket/prefix`` URL.

    Args:
        prefix_url: the checkpoint's URL (the DCP ``checkpoint_id``), without a trailing ``/``.
    """

    prefix_url: str

    @classmethod
    def parse(cls, checkpoint_id: str | os.PathLike[str], what: str) -> CheckpointLayout:
        """Check ``checkpoint_id`` is an ``s3://bucket/prefix`` URL and build the layout.

        Raises:
            ValueError: naming ``what`` and the value, if it is not an S3 URL with a key prefix.
        """
        url = require_s3_url(checkpoint_id, what, "use torch's FileSystemWriter/Reader for local paths")
        url = url.rstrip("/")
        if not parse_s3_url(url)[1]:
            raise ValueError(f"{what} {url!r} names a bucket only: add a prefix, e.g. {url}/step-100")
        return cls(url)

    @property
    def metadata_url(self) -> str:
        """The commit object's URL."""
        return self.url_of(METADATA_NAME)

    def url_of(self, name: str) -> str:
        """The URL of the object ``name`` (relative to the prefix)."""
        return join_s3_url(self.prefix_url, name)

    def name_of(self, key: str) -> str | None:
        """``key``'s name relative to the prefix, or None if it is not directly under it."""
        base = parse_s3_url(self.prefix_url)[1] + "/"
        rest = key[len(base) :] if key.startswith(base) else None
        return rest if rest and "/" not in rest else None
