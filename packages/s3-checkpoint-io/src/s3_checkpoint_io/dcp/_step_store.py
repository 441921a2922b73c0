"""``StepStore``: the one ``S3Store`` a DCP save or load uses, opened on first use and closed at its end.

DCP calls a storage writer (reader) several times per save (load): planning, writing (reading), and on
the coordinator the commit. Each call opening its own store started a client pool and worker threads
three times per save on the coordinator. A ``StepStore`` opens the store once, on first use, and the
writer or reader closes it when the save or load ends; a store still open when the ``StepStore`` is
garbage collected is closed then.

A pickled ``StepStore`` (DCP's process executor sends the writer to its background process) and one
inherited by a forked process arrive without the store and open their own on first use.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from s3_checkpoint_io.dcp._settings import StoreSettings
from s3_utils import S3Store


class StepStore:
    """A lazily opened ``S3Store`` of ``settings`` for one save or load at a time.

    Args:
        settings: the writer's or reader's S3 settings.
    """

    def __init__(self, settings: StoreSettings) -> None:
        self._settings = settings
        self._store: S3Store | None = None
        self._pid = 0
        self._closer: weakref.finalize[Any, Any] | None = None

    def get(self) -> S3Store:
        """The open store (opened now if this process has none)."""
        if self._store is None or self._pid != os.getpid():
            if self._closer is not None:
                self._closer.detach()  # a forked child leaves the parent's store (and threads) alone
            self._store = self._settings.open_store()
            self._pid = os.getpid()
            self._closer = weakref.finalize(self, self._store.close)
            self._closer.atexit = False  # at exit a save may still be uploading in a background thread
        return self._store

    def close(self) -> None:
        """Close the store, if one is open in this process; the next :meth:`get` opens another."""
        closer, self._closer, self._store = self._closer, None, None
        if closer is not None and self._pid == os.getpid():
            closer()
        elif closer is not None:
            closer.detach()

    def __getstate__(self) -> dict[str, Any]:
        return {"_settings": self._settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._settings = state["_settings"]
        self._store, self._pid, self._closer = None, 0, None
