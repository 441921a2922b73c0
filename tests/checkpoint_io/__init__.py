"""Tests of s3_checkpoint_io, one sub-folder per sub-package; shared helpers and top-level modules here."""
