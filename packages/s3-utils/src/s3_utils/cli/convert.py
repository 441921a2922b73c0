"""``s3ckpt convert SRC DST --to safetensors|torch``: publish a checkpoint's model in another format.

The conversion itself needs torch, so it comes from a plugin (s3-checkpoint-io's); this module reads
the command line, opens the store and reports what was written.
"""

from __future__ import annotations

import argparse
import pickle
import re

from s3_dirpath_utils import is_s3_url
from s3_utils.cli import exit_codes
from s3_utils.cli.console import Console, UsageError
from s3_utils.cli.formatting import human_size
from s3_utils.cli.plugins import ConvertRequest, converter, load_plugins
from s3_utils.cli.store import open_store
from s3_utils.cli.urls import s3_url
from s3_utils.errors import S3Error

HELP = "convert a checkpoint (sharded or one file) to Hugging Face safetensors or one torch.save file"
INSTALL_HINT = "s3ckpt convert needs torch: pip install s3-checkpoint-io"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


def parse_size(text: str) -> int:
    """``"5GB"`` -> 5,000,000,000, ``"200MiB"`` -> 209,715,200, ``"4096"`` -> 4096 bytes.

    Raises:
        UsageError: if ``text`` is not a positive size.
    """
    match = _SIZE.match(text)
    size = int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()]) if match else 0
    if size < 1:
        raise UsageError(f"--max-shard-size {text!r}: give a positive size such as 5GB, 500MB or 2GiB")
    return size


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``convert`` on the subcommand parser."""
    parser = sub.add_parser(
        "convert",
        help=HELP,
        description=HELP[0].upper() + HELP[1:] + ". Safetensors files are streamed: one tensor in memory "
        "at a time; every file appears only once complete.",
    )
    parser.add_argument("src", metavar="SRC", help="a sharded checkpoint's prefix or folder, or a .ckpt file")
    parser.add_argument(
        "dst",
        metavar="DST",
        help="safetensors: the folder or s3:// prefix to write; torch: the file to write",
    )
    parser.add_argument("--to", required=True, choices=("safetensors", "torch"), help="the output format")
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PREFIX",
        help="safetensors: keep only keys starting with PREFIX (repeatable), e.g. state_dict.",
    )
    parser.add_argument(
        "--strip-prefix", default="", metavar="PREFIX", help="safetensors: remove PREFIX from the names"
    )
    parser.add_argument("--dtype", help="safetensors: cast floating-point tensors (bf16, fp16, fp32, fp64)")
    parser.add_argument(
        "--max-shard-size", default="5GB", help="safetensors: bytes of tensors per file (default: 5GB)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace what is at DST")
    parser.add_argument(
        "--trust",
        action="store_true",
        help="unpickle arbitrary objects in SRC (runs code from the file: only for checkpoints you trust)",
    )
    parser.add_argument("--chunk-size-mb", type=float, default=None, help="part size in MiB (default: 64)")
    parser.add_argument("--concurrency", type=int, default=None, help="parallel requests (default: 10)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
    """Convert SRC to DST through the plugin; a refused request exits 2 and writes nothing."""
    request = ConvertRequest(
        source=_where(args.src, "SRC"),
        destination=_where(args.dst, "DST"),
        to=args.to,
        include=tuple(args.include),
        strip_prefix=args.strip_prefix,
        dtype=args.dtype,
        max_file_bytes=parse_size(args.max_shard_size),
        overwrite=args.overwrite,
        trust=args.trust,
    )
    if args.to == "torch" and (args.include or args.strip_prefix or args.dtype):
        raise UsageError("--include, --strip-prefix and --dtype apply to --to safetensors only")
    plugin = converter(load_plugins())
    if plugin is None:
        raise UsageError(INSTALL_HINT)
    with (
        open_store(args, args.chunk_size_mb, args.concurrency) as store,
        console.progress_bar("convert", None) as bar,
    ):
        try:
            report = plugin.convert(store, request, bar.update)
        except (FileExistsError, ValueError, pickle.UnpicklingError) as exc:  # refused: nothing written
            if isinstance(exc, S3Error):
                raise
            raise UsageError(str(exc)) from exc
    for path, size in report.files:
        console.print(f"wrote {path} ({human_size(size)})")
    total = sum(size for _, size in report.files)
    rate = total / 2**20 / max(report.seconds, 1e-9)
    console.print(
        f"converted {request.source} -> {request.destination}: {report.tensors} tensors, "
        f"{len(report.files)} file(s), {human_size(total)} in {report.seconds:.1f} s ({rate:.1f} MiB/s)"
    )
    return exit_codes.OK


def _where(text: str, what: str) -> str:
    return s3_url(text, what) if is_s3_url(text) else text
