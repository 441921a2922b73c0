# The shared fixtures (S3 server, client, bucket, store, fault proxy), for every layer's tests.
pytest_plugins = ["support.fixtures"]
