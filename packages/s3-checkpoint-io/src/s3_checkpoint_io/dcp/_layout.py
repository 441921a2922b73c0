"""Where a sharded checkpoint's objects live under its prefix, and how their names carry the save id.

    <prefix>/.metadata                    the commit: DCP's Metadata, naming the save id it belongs to
    <prefix>/__<save_id>_<rank>_<token>.distcp        one object per rank per save ("flat"), or
    <prefix>/<hh>/__<save_id>_<rank>_<token>.distcp   with the "rank-hash" key prefix strategy

The save id and a token each rank draws make every shard name new: a save never overwrites an object
that a committed checkpoint uses, even when a stale plan (DCP's plan caching) repeats a save id.

S3 serves a bounded request rate per key prefix and splits busy prefixes into partitions by key. With
"rank-hash", ranks write under 256 prefixes (two hex digits of a hash of the rank), so S3 can serve
thousands of ranks from as many partitions (the default); with "flat" every object of a checkpoint
lies directly under its prefix.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from s3_dirpath_utils import join_s3_url, parse_s3_url, require_s3_url
from s3_utils.sharded import COMMIT_NAME

METADATA_NAME = COMMIT_NAME
KEY_PREFIX_STRATEGIES = ("flat", "rank-hash")
"""Where shard objects go under the checkpoint's prefix: directly, or under a hash of the rank."""
_SHARD_NAME = re.compile(
    r"(?P<dir>[0-9a-f]{2}/)?__(?P<save_id>[0-9a-f]{32})_(?P<rank>\d+)_[0-9a-f]{8}\.distcp"
)


def new_save_id() -> str:
    """A fresh, unique save id (chosen once per save, on the coordinator)."""
    return uuid.uuid4().hex


def check_key_prefix_strategy(strategy: str) -> str:
    """``strategy`` if it is one of :data:`KEY_PREFIX_STRATEGIES`.

    Raises:
        ValueError: naming the value and the choices.
    """
    if strategy not in KEY_PREFIX_STRATEGIES:
        raise ValueError(f"key_prefix_strategy={strategy!r}: use one of {', '.join(KEY_PREFIX_STRATEGIES)}")
    return strategy


def rank_prefix(rank: int, strategy: str) -> str:
    """The key component ``rank``'s shard objects go under: "" for "flat", two hex digits for
    "rank-hash" (a hash, not ``rank % 256``, so neighbouring ranks land in different partitions)."""
    if strategy == "flat":
        return ""
    return hashlib.blake2s(str(rank).encode(), digest_size=1).hexdigest() + "/"


def ranks_per_prefix(ranks: Iterable[int], strategy: str) -> Counter[str]:
    """How many of ``ranks`` write under each key prefix (:func:`rank_prefix`) with ``strategy``."""
    return Counter(rank_prefix(rank, strategy) for rank in ranks)


def busiest_prefix_ranks(ranks: int, strategy: str) -> int:
    """How many of ``ranks`` ranks write under the most crowded key prefix with ``strategy``."""
    return max(ranks_per_prefix(range(ranks), strategy).values(), default=0)


def prefix_sharers(groups: Mapping[int, str], strategy: str) -> dict[int, tuple[int, int]]:
    """For each writing rank, the ranks writing under its key prefix with ``strategy``, and those of
    them in its group (on its machine, sharing its request-rate state).

    Args:
        groups: rank -> the name of its group (``s3_utils.request_rate.sharing_group``), for every
            rank that writes a shard.
        strategy: one of :data:`KEY_PREFIX_STRATEGIES`.

    Returns:
        rank -> (writers under its prefix, those of them in its group).
    """
    writers = ranks_per_prefix(groups, strategy)
    local = Counter((rank_prefix(rank, strategy), group) for rank, group in groups.items())
    return {
        rank: (writers[rank_prefix(rank, strategy)], local[rank_prefix(rank, strategy), group])
        for rank, group in groups.items()
    }


def shard_name(save_id: str, rank: int, strategy: str) -> str:
    """A new name (relative to the prefix) for ``rank``'s shard object in save ``save_id``."""
    return f"{rank_prefix(rank, strategy)}__{save_id}_{rank}_{uuid.uuid4().hex[:8]}.distcp"


def save_id_of(name: str) -> str | None:
    """The save id in a shard object's name, or None if ``name`` is not a shard object's name."""
    match = _SHARD_NAME.fullmatch(name)
    if match is None:
        return None
    if match.group("dir") and match.group("dir") != rank_prefix(int(match.group("rank")), "rank-hash"):
        return None  # not where this writer puts that rank's shard (another checkpoint nested here?)
    return match.group("save_id")


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

    @classmethod
    def is_valid(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """Whether :meth:`parse` takes ``checkpoint_id``."""
        try:
            cls.parse(checkpoint_id, "checkpoint_id")
        except ValueError:
            return False
        return True

    @property
    def metadata_url(self) -> str:
        """The commit object's URL."""
        return self.url_of(METADATA_NAME)

    def url_of(self, name: str) -> str:
        """The URL of the object ``name`` (relative to the prefix)."""
        return join_s3_url(self.prefix_url, name)

    def name_of(self, key: str) -> str | None:
        """``key``'s name relative to the prefix, or None if it is not under it."""
        base = parse_s3_url(self.prefix_url)[1] + "/"
        rest = key[len(base) :] if key.startswith(base) else None
        return rest or None
