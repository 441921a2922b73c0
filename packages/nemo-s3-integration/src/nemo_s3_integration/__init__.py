"""Checkpoint NVIDIA NeMo training to S3: exp_manager wiring and rank-0 resume discovery.

One entry point, in place of ``exp_manager(trainer, cfg.exp_manager)``::

    from nemo_s3_integration import s3_exp_manager

    log_dir = s3_exp_manager(trainer, cfg)   # cfg has exp_manager and s3_checkpointing sections
"""

from nemo_s3_integration.config import S3CheckpointingConfig
from nemo_s3_integration.integration import s3_exp_manager
from nemo_s3_integration.resume import find_resume_checkpoint
from s3_utils.limits import S3RequestRateWarning

__all__ = ["S3CheckpointingConfig", "S3RequestRateWarning", "find_resume_checkpoint", "s3_exp_manager"]

__version__ = "0.1.0"
