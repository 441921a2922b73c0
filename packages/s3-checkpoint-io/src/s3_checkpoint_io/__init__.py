"""S3CheckpointIO for PyTorch Lightning (work in progress)."""

__version__ = "0.1.0"
