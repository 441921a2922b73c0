"""Tests of s3_checkpoint_io.convert."""
