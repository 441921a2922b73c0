"""The S3 settings the DCP storage writer and reader take, turned into an ``S3Store`` once per step."""

from __future__ import annotations

from dataclasses import dataclass

from s3_utils import S3ClientConfig, S3Store, TransferConfig


@dataclass(frozen=True)
class StoreSettings:
    """Where S3 is and how bytes move; validated on construction.

    Raises:
        ValueError: if ``client_config`` is given together with one of its fields, or a value is out
            of range (``S3ConfigError``, a ``ValueError``).
    """

    client_config: S3ClientConfig
    transfer_config: TransferConfig

    @classmethod
    def build(
        cls,
        *,
        chunk_size_MB: float,
        max_concurrency: int,
        endpoint_url: str | None,
        region: str | None,
        profile: str | None,
        client_config: S3ClientConfig | None,
    ) -> StoreSettings:
        """Settings from the constructor arguments (unset ones come from the ``AWS_*`` environment)."""
        config = S3ClientConfig.resolve(
            client_config, endpoint_url=endpoint_url, region=region, profile=profile
        )
        return cls(config, TransferConfig(chunk_size_MB=chunk_size_MB, max_concurrency=max_concurrency))

    def open_store(self) -> S3Store:
        """A new store; the caller closes it (its worker threads stop then)."""
        return S3Store(self.client_config, self.transfer_config)
