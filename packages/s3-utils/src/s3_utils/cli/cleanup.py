"""``s3ckpt cleanup URL --older-than 1d``: abort stale incomplete uploads, delete unreferenced shards.

A save killed mid-upload leaves its uploaded parts behind as an incomplete multipart upload: invisible
to listings, but stored and billed until aborted (or until a bucket lifecycle rule does it). A sharded
save that fails leaves complete shard objects that no commit references: they are deleted too.
"""

from __future__ import annotations

import argparse

from s3_utils.cli import exit_codes
from s3_utils.cli.console import Console, UsageError
from s3_utils.cli.durations import parse_duration
from s3_utils.cli.formatting import human_size
from s3_utils.cli.sharded import ShardCleanup, remove_unreferenced_shards
from s3_utils.cli.store import open_store
from s3_utils.cli.urls import s3_url

HELP = (
    "abort incomplete multipart uploads (left by killed saves) and delete sharded-checkpoint shards no "
    "commit references, older than a given age"
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``cleanup`` on the subcommand parser."""
    parser = sub.add_parser(
        "cleanup",
        help=HELP,
        description=HELP[0].upper() + HELP[1:] + ". Their parts are billed until aborted. "
        "Keep --older-than longer than your longest save so uploads still in progress are left alone.",
    )
    parser.add_argument("url", metavar="URL", help="s3://bucket/prefix to clean under")
    parser.add_argument(
        "--older-than",
        default="1d",
        metavar="AGE",
        help="only uploads started longer ago than this: 90s, 30m, 12h, 1d, 2w (default: 1d)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
    """Abort the stale uploads and say how many."""
    url = s3_url(args.url)
    try:
        age = parse_duration(args.older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    with open_store(args) as store:
        aborted = store.abort_incomplete_uploads(url, older_than=age)
        shards = remove_unreferenced_shards(store, url, older_than=age)
    console.print(f"aborted {aborted} incomplete uploads older than {args.older_than} under {url}")
    _report_shards(shards, args.older_than, console)
    return exit_codes.OK


def _report_shards(shards: ShardCleanup, age: str, console: Console) -> None:
    console.print(
        f"removed {shards.removed} unreferenced shard objects ({human_size(shards.bytes_removed)}) "
        f"older than {age}"
    )
    for prefix in shards.skipped:
        console.note(
            f"left {prefix}/ alone: reading its commit needs s3-checkpoint-io (pip install s3-checkpoint-io)"
        )
