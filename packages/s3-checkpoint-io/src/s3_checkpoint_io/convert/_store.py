"""The store a conversion uses: the caller's, or one of its own from the environment."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from s3_utils import S3Store


@contextlib.contextmanager
def store_for(store: S3Store | None) -> Iterator[S3Store]:
    """``store`` as is (the caller closes it), or a new one from the ``AWS_*`` environment, closed after."""
    if store is not None:
        yield store
        return
    with S3Store() as own:
        yield own
