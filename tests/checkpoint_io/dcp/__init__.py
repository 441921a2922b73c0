"""Tests of s3_checkpoint_io.dcp."""
