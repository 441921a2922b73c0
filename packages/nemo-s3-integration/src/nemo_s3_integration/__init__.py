"""NeMo exp_manager wiring for S3 checkpoints (work in progress)."""

__version__ = "0.1.0"
