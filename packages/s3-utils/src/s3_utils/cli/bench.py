"""``s3ckpt bench URL``: time uploads and downloads over a grid of chunk size x concurrency on your own
bucket, and recommend settings that keep inside S3's per-prefix request budget.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Sequence

from s3_dirpath_utils import join_s3_url
from s3_utils.cli import exit_codes
from s3_utils.cli.console import Console, UsageError
from s3_utils.cli.plugins import load_plugins
from s3_utils.cli.store import open_store
from s3_utils.cli.tuning import (
    DEFAULT_HEADROOM,
    BenchResult,
    Recommendation,
    recommend,
)
from s3_utils.cli.urls import as_prefix, s3_url
from s3_utils.errors import S3IntegrityError
from s3_utils.limits import GET_REQUESTS_PER_PREFIX_PER_S, PUT_REQUESTS_PER_PREFIX_PER_S

HELP = "time a grid of chunk size x concurrency on your bucket and recommend settings"
_MIB = 1024 * 1024


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return sorted(set(values))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``bench`` on the subcommand parser."""
    parser = sub.add_parser(
        "bench",
        help=HELP,
        description=HELP[0].upper() + HELP[1:] + ". Writes random objects under URL/s3ckpt-bench-<id>/ "
        "and deletes them afterwards. Run it from the kind of machine you train on: throughput depends "
        f"on its network. S3 serves about {PUT_REQUESTS_PER_PREFIX_PER_S} PUT and "
        f"{GET_REQUESTS_PER_PREFIX_PER_S} GET requests per second per prefix; the recommendation keeps "
        f"--ranks processes together under {DEFAULT_HEADROOM:.0%} of that.",
    )
    parser.add_argument("url", metavar="URL", help="s3://bucket/prefix to write scratch objects under")
    parser.add_argument("--size-mb", type=int, default=256, help="MiB per transfer (default: 256)")
    parser.add_argument(
        "--chunk-sizes",
        type=_int_list,
        default=[8, 16, 32, 64, 128],
        metavar="MB,...",
        help="part sizes in MiB to try, each 5 to 5120 (default: 8,16,32,64,128)",
    )
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        default=[4, 8, 16, 32],
        metavar="N,...",
        help="requests in flight per transfer to try (default: 4,8,16,32)",
    )
    parser.add_argument(
        "--ranks",
        type=int,
        default=1,
        help="processes that save or load under the same prefix at the same time (default: 1)",
    )
    parser.add_argument(
        "--torch",
        action="store_true",
        help="also time a real torch save and load with the recommended settings (needs s3-checkpoint-io)",
    )
    parser.set_defaults(run=run)


def measure(
    args: argparse.Namespace, scratch: str, payload: bytes, chunk: int, concurrency: int
) -> BenchResult:
    """Upload and download ``payload`` once with one setting; the object is deleted afterwards."""
    url = join_s3_url(scratch, f"c{chunk}-n{concurrency}.bin")
    with open_store(args, chunk_size_MB=chunk, max_concurrency=concurrency) as store:
        started = time.perf_counter()
        store.upload_bytes(url, payload)
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        data = store.download_bytes(url)
        read_s = time.perf_counter() - started
        store.delete(url)
    if len(data) != len(payload):
        raise S3IntegrityError(f"bench read {len(data)} bytes back from {url}, wrote {len(payload)}")
    return BenchResult(chunk, concurrency, len(payload), max(write_s, 1e-9), max(read_s, 1e-9))


def run(args: argparse.Namespace, console: Console) -> int:
    """Run the grid, print it, and print the recommendation."""
    prefix = as_prefix(s3_url(args.url))
    if args.size_mb < 1:
        raise UsageError(f"--size-mb must be >= 1, got {args.size_mb}")
    if args.ranks < 1:
        raise UsageError(f"--ranks must be >= 1, got {args.ranks}")
    bad = [c for c in args.chunk_sizes if not 5 <= c <= 5120]
    if bad:
        raise UsageError(f"--chunk-sizes {bad}: S3 parts must be 5 to 5120 MiB")
    plugins = load_plugins() if args.torch else []
    if args.torch and not plugins:
        raise UsageError("--torch needs s3-checkpoint-io installed (pip install s3-checkpoint-io)")

    scratch = join_s3_url(prefix, f"s3ckpt-bench-{uuid.uuid4().hex[:12]}/")
    payload = os.urandom(args.size_mb * _MIB)
    results: list[BenchResult] = []
    console.note(f"bench: {args.size_mb} MiB per transfer under {scratch}")
    console.print(_header())
    try:
        for chunk in args.chunk_sizes:
            for concurrency in args.concurrency:
                result = measure(args, scratch, payload, chunk, concurrency)
                results.append(result)
                console.print(_row(result, args.ranks))
        best = recommend(results, ranks=args.ranks)
        _print_recommendation(console, best)
        for plugin in plugins:
            timing = plugin.bench_save_load(scratch, args.size_mb, best)
            console.print(
                f"{timing.label}: {timing.size_bytes / _MIB:.1f} MiB saved in {timing.save_s:.2f}s "
                f"({timing.size_bytes / _MIB / max(timing.save_s, 1e-9):.1f} MiB/s), loaded in "
                f"{timing.load_s:.2f}s ({timing.size_bytes / _MIB / max(timing.load_s, 1e-9):.1f} MiB/s)"
            )
    finally:
        with open_store(args) as store:
            store.delete_prefix(scratch)
    return exit_codes.OK


def _header() -> str:
    return (
        f"{'CHUNK MiB':>9} {'CONC':>5} {'WRITE MiB/s':>12} {'READ MiB/s':>11} "
        f"{'PUT/s (all ranks)':>18} {'GET/s (all ranks)':>18}"
    )


def _row(result: BenchResult, ranks: int) -> str:
    return (
        f"{result.chunk_size_MB:>9} {result.concurrency:>5} {result.write_MiB_per_s:>12.1f} "
        f"{result.read_MiB_per_s:>11.1f} {result.puts_per_s * ranks:>18.0f} "
        f"{result.gets_per_s * ranks:>18.0f}"
    )


def _print_recommendation(console: Console, best: Recommendation) -> None:
    console.print("")
    if best.within_budget:
        console.print(
            f"recommended for {best.ranks} rank(s) saving under one prefix "
            f"(~{best.total_puts_per_s:.0f} PUT/s of {PUT_REQUESTS_PER_PREFIX_PER_S}, "
            f"~{best.total_gets_per_s:.0f} GET/s of {GET_REQUESTS_PER_PREFIX_PER_S}):"
        )
    else:
        console.print(
            f"WARNING: no measured setting keeps {best.ranks} ranks under {DEFAULT_HEADROOM:.0%} of the "
            "per-prefix budget; these are the gentlest measured. Try larger --chunk-sizes, or give ranks "
            "separate prefixes:"
        )
    for line in settings_lines(best):
        console.print(line)


def settings_lines(best: Recommendation) -> Sequence[str]:
    """The recommendation as a NeMo ``s3_checkpointing`` block and an ``S3CheckpointIO`` call."""
    return (
        "  s3_checkpointing:",
        f"    chunk_size_MB: {best.chunk_size_MB}",
        f"    max_write_concurrency: {best.max_write_concurrency}",
        f"    max_read_concurrency: {best.max_read_concurrency}",
        f"  # expected per rank: write {best.write_MiB_per_s:.1f} MiB/s, "
        f"read {best.read_MiB_per_s:.1f} MiB/s",
        f"  S3CheckpointIO(dirpath, chunk_size_MB={best.chunk_size_MB}, "
        f"max_write_concurrency={best.max_write_concurrency}, "
        f"max_read_concurrency={best.max_read_concurrency})",
    )
