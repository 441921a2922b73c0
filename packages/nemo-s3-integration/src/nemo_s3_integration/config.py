"""The ``s3_checkpointing`` section of a NeMo config, validated once at start-up.

S3 serves about 3,500 PUT/s and 5,500 GET/s per prefix. Every model-parallel rank (tp x pp of them) saves
and loads its own shard under the same prefix at the same moment, each with ``max_*_concurrency``
requests in flight, and retries add roughly 15% on top. A section whose product exceeds the budget is
accepted but warned about: S3 answers such bursts with 503 SlowDown and the save slows down instead.
"""

from __future__ import annotations

import difflib
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from s3_utils.limits import (
    MAX_PART_SIZE_MB,
    MIN_PART_SIZE_MB,
    S3RequestRateWarning,
    prefix_request_rate_excess,
)

logger = logging.getLogger(__name__)

MAX_CONCURRENCY = 1024
"""Far above anything useful; a larger value is a typo."""

SECTION = "s3_checkpointing"


@dataclass(frozen=True)
class S3CheckpointingConfig:
    """How NeMo checkpoints are written to and read from S3.

    Attributes:
        max_write_concurrency: multipart parts uploaded at once by one rank's save.
        max_read_concurrency: ranged GETs in flight at once by one rank's load.
        chunk_size_MB: multipart part size and ranged GET size, in MiB (5 to 5120).
        enable_async_checkpointing: save in the background while training goes on.
    """

    max_write_concurrency: int = 10
    max_read_concurrency: int = 15
    chunk_size_MB: int = 64
    enable_async_checkpointing: bool = False

    def __post_init__(self) -> None:
        for name in ("max_write_concurrency", "max_read_concurrency"):
            _check_int(f"{SECTION}.{name}", getattr(self, name), 1, MAX_CONCURRENCY)
        _check_int(f"{SECTION}.chunk_size_MB", self.chunk_size_MB, MIN_PART_SIZE_MB, MAX_PART_SIZE_MB)
        if not isinstance(self.enable_async_checkpointing, bool):
            raise ValueError(
                f"{SECTION}.enable_async_checkpointing must be True or False, "
                f"got {self.enable_async_checkpointing!r}"
            )

    @classmethod
    def from_section(cls, section: Mapping[str, Any] | None) -> S3CheckpointingConfig:
        """Build the config from the ``s3_checkpointing`` mapping of a (YAML / OmegaConf) config.

        Every key must be given: a silently defaulted concurrency is how request-rate budgets get blown.

        Args:
            section: the mapping under ``s3_checkpointing`` (a ``dict`` or an OmegaConf ``DictConfig``).

        Returns:
            The validated config.

        Raises:
            ValueError: if the section is missing, has unknown or missing keys, or a value is out of range;
                the message names the key.
        """
        if section is None:
            raise ValueError(
                f"the config has no '{SECTION}' section; add one with the keys {', '.join(_KEYS)} "
                "(see docs/nemo.md)"
            )
        if not isinstance(section, Mapping):
            raise ValueError(
                f"'{SECTION}' must be a mapping of {', '.join(_KEYS)}, got {type(section).__name__}"
            )
        given = {str(key): value for key, value in section.items()}
        unknown = sorted(set(given) - set(_KEYS))
        if unknown:
            hints = [_did_you_mean(key) for key in unknown]
            raise ValueError(f"unknown key(s) in '{SECTION}': " + "; ".join(hints))
        missing = [key for key in _KEYS if key not in given]
        if missing:
            raise ValueError(
                f"'{SECTION}' is missing the key(s) {', '.join(missing)}; "
                f"set them explicitly (defaults: {_defaults_text(missing)})"
            )
        return cls(**given)

    def warn_if_over_request_budget(self, tensor_parallel: int = 1, pipeline_parallel: int = 1) -> list[str]:
        """Warn when tp x pp x concurrency x 1.15 exceeds S3's per-prefix request rate.

        Args:
            tensor_parallel: tensor model-parallel size (ranks that save their own shard at once).
            pipeline_parallel: pipeline model-parallel size.

        Returns:
            The warning messages issued (empty when within budget).

        Raises:
            ValueError: if a parallel size is not a positive integer.
        """
        _check_int("tensor_model_parallel_size", tensor_parallel, 1, None)
        _check_int("pipeline_model_parallel_size", pipeline_parallel, 1, None)
        messages = []
        for key, operation in (("max_write_concurrency", "PUT"), ("max_read_concurrency", "GET")):
            concurrency = getattr(self, key)
            excess = prefix_request_rate_excess(tensor_parallel * pipeline_parallel, concurrency, operation)
            if excess is not None:
                parallel = f"tp={tensor_parallel} x pp={pipeline_parallel}"
                messages.append(f"{SECTION}.{key}={concurrency} with {parallel}: {excess}")
        for message in messages:
            logger.warning(message)
            warnings.warn(message, S3RequestRateWarning, stacklevel=2)
        return messages


_KEYS = tuple(f.name for f in fields(S3CheckpointingConfig))


def _check_int(label: str, value: object, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{label} must be an integer, got {value!r} ({type(value).__name__})")
    if value < low or (high is not None and value > high):
        allowed = f"{low} to {high}" if high is not None else f">= {low}"
        raise ValueError(f"{label} must be {allowed}, got {value}")


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, _KEYS, n=1)
    return f"{key!r} (did you mean {close[0]!r}?)" if close else f"{key!r} (allowed: {', '.join(_KEYS)})"


def _defaults_text(keys: list[str]) -> str:
    defaults = S3CheckpointingConfig()
    return ", ".join(f"{key}={getattr(defaults, key)!r}" for key in keys)
