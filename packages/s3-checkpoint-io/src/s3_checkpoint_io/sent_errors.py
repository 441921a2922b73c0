"""An exception as it travels to another process: itself when it survives pickling, else described.

The upload helper process sends its failures to the trainer, and rank 0 (or a load's coordinator)
sends its failures to the other ranks. An exception that does not unpickle on the other side would
turn one clear error into a second, unrelated one (or leave the receiver waiting), so the receiver
gets the exception itself only when the round trip works, and always its type and message.

Imports only the standard library: the upload helper process imports it.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

_BUILTIN_KINDS: tuple[type[Exception], ...] = (
    PermissionError,
    FileNotFoundError,
    ConnectionError,
    TimeoutError,
    ValueError,
    TypeError,
    OSError,
)
"""The built-in types a described error is raised as (the first it is an instance of), so that
``except PermissionError`` (access denied) or ``except FileNotFoundError`` still works."""


def pickled_or_none(error: BaseException) -> bytes | None:
    """``error`` pickled, if it also unpickles here; else None (it cannot travel as itself)."""
    try:
        data = pickle.dumps(error)
        pickle.loads(data)
    except Exception:
        return None
    return data


@dataclass(frozen=True)
class SentError:
    """An exception as it travels: pickled when it survives the round trip, and always described.

    Attributes:
        qualified_name: ``module.QualName`` of its type.
        description: ``"TypeName: message"``.
        message: ``str(error)``.
        pickled: the pickled exception, or None if it does not survive pickling.
        builtin_kind: the first of a few built-in types (``PermissionError``, ``FileNotFoundError``,
            ``ConnectionError``, ``TimeoutError``, ``ValueError``, ``TypeError``, ``OSError``) it is an
            instance of, else ``RuntimeError``: what to rebuild it as when ``pickled`` is None.
    """

    qualified_name: str
    description: str
    message: str
    pickled: bytes | None
    builtin_kind: type[Exception]

    @classmethod
    def of(cls, error: BaseException) -> SentError:
        """``error`` ready to send."""
        kind = type(error)
        return cls(
            qualified_name=f"{kind.__module__}.{kind.__qualname__}",
            description=f"{kind.__name__}: {error}",
            message=str(error),
            pickled=pickled_or_none(error),
            builtin_kind=next((k for k in _BUILTIN_KINDS if isinstance(error, k)), RuntimeError),
        )

    def unpickled(self) -> BaseException | None:
        """A copy of the exception, or None if it could not travel as itself."""
        if self.pickled is None:
            return None
        error: BaseException = pickle.loads(self.pickled)
        return error
