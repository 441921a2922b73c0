"""``s3ckpt cp SRC DST``: parallel upload or download; one side local, the other ``s3://``.

A download goes to a temporary file beside the target and is renamed over it only when complete, so a
failure (disk full, S3 error, Ctrl-C) never leaves a half-written file where the checkpoint should be.
A target that is not a regular file (``/dev/null``, a pipe) is written directly.
"""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

from s3_dirpath_utils import is_s3_url
from s3_utils import S3Store
from s3_utils.cli import exit_codes, sharded
from s3_utils.cli.console import Console, UsageError
from s3_utils.cli.formatting import human_size
from s3_utils.cli.store import open_store
from s3_utils.cli.urls import basename, s3_url

HELP = "copy a checkpoint between a local path and S3, with parallel ranged transfers"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``cp`` on the subcommand parser."""
    parser = sub.add_parser(
        "cp",
        help=HELP,
        description=HELP[0].upper() + HELP[1:] + ". A download is written to a temporary file and renamed "
        "into place when complete; on failure the partial file is removed.",
    )
    parser.add_argument("src", metavar="SRC", help="local path or s3://bucket/key")
    parser.add_argument(
        "dst", metavar="DST", help="local path or s3://bucket/key (a trailing / keeps the name)"
    )
    parser.add_argument("--chunk-size-mb", type=float, default=None, help="part size in MiB (default: 64)")
    parser.add_argument("--concurrency", type=int, default=None, help="parallel requests (default: 10)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
    """Upload or download, depending on which side is ``s3://``."""
    src_s3, dst_s3 = is_s3_url(args.src), is_s3_url(args.dst)
    if src_s3 == dst_s3:
        side = "both are S3 URLs" if src_s3 else "neither is an S3 URL"
        raise UsageError(f"cp copies between a local path and S3, but {side}: {args.src!r} -> {args.dst!r}")
    with open_store(args, chunk_size_MB=args.chunk_size_mb, max_concurrency=args.concurrency) as store:
        if _copy_sharded(store, args, console):
            return exit_codes.OK
        if dst_s3:
            upload(store, Path(args.src), s3_url(args.dst, "DST"), console)
        else:
            download(
                store, s3_url(args.src, "SRC"), Path(args.dst), console, trailing_slash=args.dst.endswith("/")
            )
    return exit_codes.OK


def _copy_sharded(store: S3Store, args: argparse.Namespace, console: Console) -> bool:
    """Copy a whole sharded checkpoint (a local folder or S3 prefix with a commit), if SRC is one."""
    if is_s3_url(args.src):
        src = s3_url(args.src, "SRC")
        if not sharded.is_sharded(store, src):
            return False
        dst = Path(args.dst)
        sharded.download_sharded(store, src, dst, console, into=args.dst.endswith("/") or dst.is_dir())
        return True
    if not sharded.is_local_sharded(Path(args.src)):
        return False
    sharded.upload_sharded(store, Path(args.src), s3_url(args.dst, "DST"), console)
    return True


def upload(store: S3Store, src: Path, dst: str, console: Console) -> None:
    """Stream ``src`` into a multipart upload; on any failure the upload is aborted and no object appears.

    The progress bar counts the bytes S3 has stored, part by part (the store's ``on_progress`` hook).

    Raises:
        FileNotFoundError: if ``src`` does not exist.
        UsageError: if ``src`` is a folder.
    """
    if src.is_dir():
        raise UsageError(f"{src} is a folder; cp copies one file")
    if dst.endswith("/"):
        dst += src.name
    with src.open("rb") as source:
        size = os.fstat(source.fileno()).st_size
        with console.progress_bar(src.name, size) as progress:
            store.upload_stream(source, dst, progress.update)
    console.print(f"uploaded {src} -> {dst} ({human_size(size)})")


def download(store: S3Store, src: str, dst: Path, console: Console, trailing_slash: bool = False) -> None:
    """Download ``src`` to ``dst`` with parallel ranged GETs, atomically for regular files.

    The store writes a temporary file beside ``dst`` and renames it into place only when complete
    (deleting it on failure); the progress bar counts the ranges that have arrived.

    Raises:
        S3NotFoundError: if ``src`` does not exist.
        OSError: if the local write fails (the partial file is removed first).
    """
    if trailing_slash or dst.is_dir():
        dst = dst / basename(src)
    info = store.head(src)
    if dst.exists() and not stat.S_ISREG(dst.stat().st_mode):
        # /dev/null, /dev/full, a pipe: nothing to rename over, so write straight to it
        data = store.download_bytes(src)
        with dst.open("wb") as target:
            target.write(data)
        console.print(f"downloaded {src} -> {dst} ({human_size(len(data))})")
        return
    if not dst.parent.is_dir():
        raise FileNotFoundError(2, "no such folder to download into", str(dst.parent))
    with console.progress_bar(dst.name, info.size) as progress:
        store.download_file(src, dst, progress.update)
    console.print(f"downloaded {src} -> {dst} ({human_size(info.size)})")
