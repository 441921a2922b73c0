"""Fast, bounded, retrying S3 transfers (work in progress)."""

__version__ = "0.1.0"
