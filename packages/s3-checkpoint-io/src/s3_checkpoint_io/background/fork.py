"""Objects that start fresh in a child made by ``os.fork`` (DataLoader workers, a user's fork).

The child gets a copy of the parent's memory but only the thread that forked: worker threads, their
queues and any lock one of them held at that instant are copies of state nobody will ever update. An
object registered here drops such state in the child before the child's own code runs again.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

_Owner = TypeVar("_Owner")

_resets: weakref.WeakKeyDictionary[Any, Callable[[Any], None]] = weakref.WeakKeyDictionary()
_resets_lock = threading.Lock()


def start_fresh_after_fork(owner: _Owner, reset: Callable[[_Owner], None]) -> None:
    """Call ``reset(owner)`` in every child forked while ``owner`` is alive.

    ``reset`` runs in the child right after the fork, with no other thread running: it must only
    replace state (new locks, no executor, empty queues), never wait on or close the parent's.
    """
    with _resets_lock:
        _resets[owner] = reset


def _reset_all_in_child() -> None:
    global _resets_lock
    _resets_lock = threading.Lock()  # the parent may have held it at the fork
    for owner, reset in list(_resets.items()):
        reset(owner)


os.register_at_fork(after_in_child=_reset_all_in_child)
