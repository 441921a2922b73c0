from support.fixtures import bucket, s3_client, s3_server  # noqa: F401
