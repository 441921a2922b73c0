"""What one completed save cost: :class:`SaveStats`, kept by ``S3CheckpointIO.save_history``."""

from __future__ import annotations

from dataclasses import dataclass

from s3_utils import TransferStats
from s3_utils.limits import MiB


@dataclass(frozen=True)
class SaveStats:
    """What one completed save cost.

    Attributes:
        sequence: 1 for the first save of this ``S3CheckpointIO``, then 2, 3, ...
        path: the checkpoint URL.
        bytes: bytes written to S3.
        stall_s: seconds ``save_checkpoint`` blocked its caller (the whole save when synchronous;
            waiting for a free slot plus taking the snapshot when asynchronous).
        upload_s: seconds from opening the upload to completing it, serialization included (in the
            background when asynchronous), as the upload's writer counted them.
        asynchronous: whether the upload ran in the background.
        requests: HTTP requests the upload sent, retries included.
        retries: requests sent again after a transient failure.
    """

    sequence: int
    path: str
    bytes: int
    stall_s: float
    upload_s: float
    asynchronous: bool
    requests: int = 0
    retries: int = 0

    @classmethod
    def of_upload(
        cls, sequence: int, path: str, upload: TransferStats, stall_s: float, asynchronous: bool
    ) -> SaveStats:
        """The stats of the save of ``path``, whose upload the writer counted in ``upload``."""
        return cls(
            sequence,
            path,
            upload.bytes,
            stall_s,
            upload.seconds,
            asynchronous,
            upload.requests,
            upload.retries,
        )

    @property
    def mib_per_s(self) -> float:
        """Upload throughput in MiB/s (0 for an instantaneous upload)."""
        return self.bytes / MiB / self.upload_s if self.upload_s > 0 else 0.0

    def as_metrics(self, prefix: str = "checkpoint/") -> dict[str, float]:
        """The numbers as a flat dict for a Lightning logger, keys starting with ``prefix``."""
        return {
            f"{prefix}save_bytes": float(self.bytes),
            f"{prefix}save_stall_s": self.stall_s,
            f"{prefix}save_upload_s": self.upload_s,
            f"{prefix}save_MiB_per_s": self.mib_per_s,
            f"{prefix}save_requests": float(self.requests),
            f"{prefix}save_retries": float(self.retries),
        }
