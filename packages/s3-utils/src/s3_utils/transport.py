"""What every transfer needs from its store: the client, the retry policy, the settings, the workers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from s3_utils.buffers import KeptBuffers
from s3_utils.config import TransferConfig
from s3_utils.retry import Requester
from s3_utils.stats import TransferSubscriber

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class Transport:
    """The shared parts of one :class:`~s3_utils.store.S3Store`, handed to writers and downloads.

    The store owns the executor and the kept part buffers; transfers only submit to the one and take
    from and give to the other.
    """

    client: S3Client
    requester: Requester
    transfer: TransferConfig
    executor: ThreadPoolExecutor
    subscribers: tuple[TransferSubscriber, ...]
    kept_buffers: KeptBuffers
