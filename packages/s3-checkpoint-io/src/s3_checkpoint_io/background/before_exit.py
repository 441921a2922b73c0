"""Run a function at interpreter exit *before* ``concurrent.futures`` stops accepting work.

``atexit`` is too late for a save still uploading: ``threading._shutdown`` runs first, and in it
``concurrent.futures.thread`` (through the same hook used here) marks the interpreter as shutting down,
after which every ``ThreadPoolExecutor.submit`` raises ``RuntimeError("cannot schedule new futures
after interpreter shutdown")``, including the part uploads of an ``S3Store`` writer in the middle of
a multipart save. Python has no public hook that runs earlier, so this module holds the one use of
the private ``threading._register_atexit`` (there since Python 3.9, and what ``concurrent.futures``
itself uses; this package declares Python >= 3.10 and is tested on 3.11). Its hooks run newest first,
and ``concurrent.futures.thread`` is imported below, before ours is registered, so ours runs first.
"""

from __future__ import annotations

import concurrent.futures.thread  # noqa: F401  (imported first: its exit hook must run after ours)
import threading
from collections.abc import Callable


def run_before_thread_shutdown(hook: Callable[[], None]) -> None:
    """Call ``hook()`` at interpreter exit, before threading joins its threads and before
    ``concurrent.futures`` refuses new work (so a pending upload can still finish)."""
    threading._register_atexit(hook)  # type: ignore[attr-defined]
