"""Fast, bounded, retrying S3 transfers: the layer every checkpoint layer above uses.

Start with :class:`S3Store`; see ``docs/architecture.md`` for the contract.
"""

from s3_utils import errors
from s3_utils.config import S3ClientConfig, TransferConfig
from s3_utils.errors import (
    S3AccessDeniedError,
    S3ConfigError,
    S3EndpointError,
    S3Error,
    S3IntegrityError,
    S3NotFoundError,
    S3ObjectChangedError,
    S3TransferError,
)
from s3_utils.facade import S3Utils, default_store
from s3_utils.objects import ObjectInfo
from s3_utils.stats import TransferStats, TransferSubscriber
from s3_utils.store import S3Store
from s3_utils.writer import S3Writer

__all__ = [
    "ObjectInfo",
    "S3AccessDeniedError",
    "S3ClientConfig",
    "S3ConfigError",
    "S3EndpointError",
    "S3Error",
    "S3IntegrityError",
    "S3NotFoundError",
    "S3ObjectChangedError",
    "S3Store",
    "S3TransferError",
    "S3Utils",
    "S3Writer",
    "TransferConfig",
    "TransferStats",
    "TransferSubscriber",
    "default_store",
    "errors",
]
__version__ = "0.1.0"
