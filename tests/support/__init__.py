"""Shared test fixtures and helpers: the S3 server, the fault proxy, the multi-rank launcher."""
