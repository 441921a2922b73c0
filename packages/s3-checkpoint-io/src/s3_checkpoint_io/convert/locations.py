"""Where a conversion reads and writes: an ``s3://`` prefix or a local folder, behind one small interface.

Sources and destinations are named once at the edge (:func:`location_of`); inside, everything speaks
names relative to the location, so the converters never branch on S3 versus disk.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol, cast

from s3_dirpath_utils import is_s3_url, join_s3_url
from s3_utils import S3NotFoundError, S3Store
from s3_utils.local_files import file_replacing


class Location(Protocol):
    """A folder of named objects (an S3 prefix or a local directory)."""

    def url(self, name: str) -> str:
        """The full URL or path of ``name``, for messages."""
        ...

    def size(self, name: str) -> int | None:
        """The size of ``name`` in bytes, or None if it does not exist."""
        ...

    def read_into(self, name: str, offset: int, buffer: memoryview) -> None:
        """Fill ``buffer`` with the bytes of ``name`` from ``offset``."""
        ...

    def writer(self, name: str, size: int | None) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A file-like for ``name`` (about ``size`` bytes, if known) that publishes it only when the
        ``with`` block ends without error."""
        ...

    def remove(self, name: str) -> None:
        """Delete ``name`` if it exists."""
        ...


class S3Location:
    """Objects under an ``s3://`` prefix, through one :class:`~s3_utils.S3Store`."""

    def __init__(self, store: S3Store, prefix_url: str) -> None:
        self.store = store
        self.prefix = prefix_url.rstrip("/")

    def url(self, name: str) -> str:
        return join_s3_url(self.prefix, name) if name else self.prefix

    def size(self, name: str) -> int | None:
        try:
            return self.store.head(self.url(name)).size
        except S3NotFoundError:
            return None

    def read_into(self, name: str, offset: int, buffer: memoryview) -> None:
        if buffer.nbytes:
            self.store.download_range(self.url(name), offset, buffer)

    def writer(self, name: str, size: int | None) -> contextlib.AbstractContextManager[IO[bytes]]:
        return cast(
            "contextlib.AbstractContextManager[IO[bytes]]",
            self.store.open_writer(self.url(name), expected_size=size),
        )

    def remove(self, name: str) -> None:
        self.store.delete(self.url(name))


class LocalLocation:
    """Files in a local directory."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def url(self, name: str) -> str:
        return str(self.folder / name) if name else str(self.folder)

    def size(self, name: str) -> int | None:
        path = self.folder / name
        return path.stat().st_size if path.is_file() else None

    def read_into(self, name: str, offset: int, buffer: memoryview) -> None:
        with open(self.folder / name, "rb") as file:
            file.seek(offset)
            view = buffer.cast("B")
            done = 0
            while done < view.nbytes:
                got = file.readinto(view[done:])
                if not got:
                    raise EOFError(
                        f"{self.url(name)} ends at byte {offset + done}, before the {view.nbytes} bytes "
                        f"asked for at {offset}: the file is truncated"
                    )
                done += got

    def remove(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def writer(self, name: str, size: int | None) -> Iterator[IO[bytes]]:
        target = self.folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with file_replacing(target, suffix=".partial") as fd, os.fdopen(fd, "wb", closefd=False) as file:
            yield file


def location_of(url_or_path: str, store: S3Store) -> Location:
    """The location ``url_or_path`` names: an S3 prefix when it starts with ``s3://``, else a folder."""
    if is_s3_url(url_or_path):
        return S3Location(store, url_or_path)
    return LocalLocation(url_or_path)


def parent_and_name(url_or_path: str) -> tuple[str, str]:
    """``("s3://b/run", "x.ckpt")`` for ``s3://b/run/x.ckpt``: an object as a folder and a name in it."""
    head, slash, name = url_or_path.rstrip("/").rpartition("/")
    if not slash and name and not is_s3_url(url_or_path):
        return ".", name  # a bare local file name: in the working directory
    if not name or not head or head.endswith(":/"):
        return url_or_path.rstrip("/"), ""
    return head, name
