"""Extra ``s3ckpt`` abilities that need more than s3-utils (torch), found through entry points.

s3-utils never imports torch. A package that can load checkpoints (s3-checkpoint-io) declares an entry
point in the ``s3ckpt.plugins`` group whose object implements :class:`CliPlugin`; ``verify`` then also
checks that the checkpoint loads, and ``bench --torch`` times a real save and load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from s3_utils.cli.tuning import Recommendation

if TYPE_CHECKING:
    from s3_utils.store import S3Store

ENTRY_POINT_GROUP = "s3ckpt.plugins"
"""The entry-point group ``s3ckpt`` loads plugins from."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SaveLoadTiming:
    """A timed save and load of a checkpoint-shaped object through a plugin.

    Attributes:
        label: what was saved (e.g. ``"torch state_dict via S3CheckpointIO"``).
        size_bytes: size of the saved object in S3.
        save_s: seconds the save took until the object was complete in S3.
        load_s: seconds the load took.
    """

    label: str
    size_bytes: int
    save_s: float
    load_s: float


@runtime_checkable
class CliPlugin(Protocol):
    """What an ``s3ckpt.plugins`` entry point must provide."""

    name: str

    def check_loads(self, data: bytearray, url: str, weights_only: bool) -> str:
        """Load a checkpoint from its bytes and describe it in one line.

        Args:
            data: the whole object, already checksum-verified.
            url: where it came from, for messages.
            weights_only: refuse arbitrary pickled objects (safe for untrusted files).

        Returns:
            A one-line description of what was loaded.

        Raises:
            Exception: any error that shows the checkpoint does not load.
        """
        ...

    def bench_save_load(self, prefix_url: str, size_MB: int, settings: Recommendation) -> SaveLoadTiming:
        """Save and load a checkpoint of about ``size_MB`` under ``prefix_url`` with ``settings``.

        The plugin removes what it wrote before returning.

        Args:
            prefix_url: a scratch prefix the CLI owns.
            size_MB: approximate checkpoint size in MiB.
            settings: the chunk size and concurrencies to use.

        Returns:
            The timings.
        """
        ...


@runtime_checkable
class ShardedCheckpointPlugin(Protocol):
    """What a plugin provides to read a sharded checkpoint's commit (optional, beside :class:`CliPlugin`)."""

    name: str

    def shard_extents(self, commit: bytearray, url: str) -> dict[str, int]:
        """The shard objects a commit references and how many bytes of each it uses.

        Args:
            commit: the commit object's bytes.
            url: where it came from, for messages.

        Returns:
            ``{shard object name under the checkpoint prefix: bytes of it the checkpoint needs}``.

        Raises:
            Exception: if the bytes are not a commit the plugin understands.
        """
        ...


@dataclass(frozen=True)
class TensorInfo:
    """One tensor a checkpoint stores, as ``s3ckpt ls --tensors`` lists it.

    Attributes:
        name: its key (nested keys joined with ``.``).
        dtype: its element type, as torch names it (``"float32"``).
        shape: the whole tensor's shape (a sharded tensor: the global shape).
        nbytes: the whole tensor's bytes.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class CommitSummary:
    """What a sharded checkpoint's ``.metadata`` says, read by a plugin.

    Attributes:
        kind: which writer's layout it is (``"s3-checkpoint-io"``, ``"s3-checkpoint-io (format 1)"``,
            ``"torch DCP"`` for torch's, fsspec's and s3torchconnector's writers).
        save_id: the save it commits, where the layout records one.
        extents: ``{shard object name under the prefix: bytes of it the checkpoint uses}``.
        tensors: every tensor it stores, by name.
    """

    kind: str
    save_id: str | None
    extents: dict[str, int]
    tensors: list[TensorInfo]


@runtime_checkable
class CommitReaderPlugin(Protocol):
    """What a plugin provides to describe a sharded checkpoint's commit (optional, like the one above)."""

    name: str

    def describe_commit(self, commit: bytearray, url: str) -> CommitSummary:
        """The layout, save, shard extents and tensors of a commit.

        Args:
            commit: the commit object's bytes.
            url: where it came from, for messages.

        Raises:
            Exception: if the bytes are not a commit the plugin understands.
        """
        ...


@runtime_checkable
class FileDescriberPlugin(Protocol):
    """What a plugin provides to list a single-file checkpoint's tensors without downloading it."""

    name: str

    def describe_file(self, store: S3Store, url: str) -> list[TensorInfo]:
        """Every tensor of the ``torch.save`` object at ``url``, from ranged reads of its zip directory.

        Args:
            store: the store to read with.
            url: the object.

        Raises:
            Exception: if the object is not a checkpoint the plugin can list.
        """
        ...


@dataclass(frozen=True)
class ConvertRequest:
    """One ``s3ckpt convert``.

    Attributes:
        source: the checkpoint (a sharded checkpoint's prefix or folder, or one file; ``s3://`` or local).
        destination: where to write (a folder or prefix for safetensors, a file for torch).
        to: ``"safetensors"`` or ``"torch"``.
        include: for safetensors, keep only keys starting with one of these (empty: all).
        strip_prefix: for safetensors, removed from the start of the names that have it.
        dtype: for safetensors, cast floating-point tensors to this type (a torch dtype name).
        max_file_bytes: for safetensors, tensor bytes per file at most.
        overwrite: replace what is at the destination.
        trust: unpickle arbitrary objects in the source (only for checkpoints you trust).
    """

    source: str
    destination: str
    to: str
    include: tuple[str, ...] = ()
    strip_prefix: str = ""
    dtype: str | None = None
    max_file_bytes: int = 5 * 10**9
    overwrite: bool = False
    trust: bool = False


@dataclass(frozen=True)
class ConvertReport:
    """What a conversion wrote.

    Attributes:
        files: ``(URL or path, bytes)`` of every file written, in the order they were published.
        tensors: how many tensors were written.
        seconds: wall time.
    """

    files: list[tuple[str, int]]
    tensors: int
    seconds: float


@runtime_checkable
class ConverterPlugin(Protocol):
    """What a plugin provides to convert checkpoints (``s3ckpt convert``)."""

    name: str

    def convert(
        self, store: S3Store, request: ConvertRequest, on_progress: Callable[[int], None] | None
    ) -> ConvertReport:
        """Run ``request``; nothing is written at the destination when the request is refused.

        Args:
            store: the store for ``s3://`` URLs.
            request: what to convert, where, how.
            on_progress: told the bytes of each piece written.

        Raises:
            FileNotFoundError: if the source, or a shard its commit names, is missing.
            FileExistsError: if the destination exists and ``request.overwrite`` is false.
            ValueError: if the source is not a checkpoint or the request cannot be met (a key filter
                matching nothing, a dtype safetensors cannot store).
        """
        ...


def converter(plugins: list[CliPlugin]) -> ConverterPlugin | None:
    """The first of ``plugins`` that converts checkpoints, if any."""
    for plugin in plugins:
        if isinstance(plugin, ConverterPlugin):
            return plugin
    return None


def file_describer(plugins: list[CliPlugin]) -> FileDescriberPlugin | None:
    """The first of ``plugins`` that lists a single file's tensors, if any."""
    for plugin in plugins:
        if isinstance(plugin, FileDescriberPlugin):
            return plugin
    return None


def commit_reader(plugins: list[CliPlugin]) -> CommitReaderPlugin | None:
    """The first of ``plugins`` that describes sharded-checkpoint commits, if any."""
    for plugin in plugins:
        if isinstance(plugin, CommitReaderPlugin):
            return plugin
    return None


def sharded_plugin(plugins: list[CliPlugin]) -> ShardedCheckpointPlugin | None:
    """The first of ``plugins`` that reads sharded-checkpoint commits, if any."""
    for plugin in plugins:
        if isinstance(plugin, ShardedCheckpointPlugin):
            return plugin
    return None


def load_plugins() -> list[CliPlugin]:
    """Every installed ``s3ckpt.plugins`` entry point that loads and implements :class:`CliPlugin`.

    A plugin that fails to import is logged and skipped: a broken optional extra must not break the
    commands that do not need it.

    Returns:
        The plugins, in entry-point name order.
    """
    found: list[CliPlugin] = []
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        try:
            plugin = point.load()
        except Exception as exc:
            logger.warning("s3ckpt plugin %r (%s) failed to load: %s", point.name, point.value, exc)
            continue
        if isinstance(plugin, CliPlugin):
            found.append(plugin)
        else:
            logger.warning("s3ckpt plugin %r (%s) does not implement CliPlugin", point.name, point.value)
    return found
