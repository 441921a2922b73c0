"""``python -m s3_utils.cli``: the same as the ``s3ckpt`` command."""

from s3_utils.cli.app import run

run()
