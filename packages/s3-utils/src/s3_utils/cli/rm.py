"""``s3ckpt rm URL``: delete a checkpoint, or everything under a prefix with ``--recursive``."""

from __future__ import annotations

import argparse
import itertools

from s3_utils.cli import exit_codes
from s3_utils.cli.console import Console, UsageError
from s3_utils.cli.formatting import human_size
from s3_utils.cli.store import open_store
from s3_utils.cli.urls import as_prefix, s3_url
from s3_utils.errors import S3NotFoundError

HELP = "delete a checkpoint (an object), or every object under a prefix with --recursive"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``rm`` on the subcommand parser."""
    parser = sub.add_parser(
        "rm",
        help=HELP,
        description=HELP[0].upper() + HELP[1:] + ". Asks for confirmation unless --yes; "
        "without a terminal to ask on it refuses unless --yes.",
    )
    parser.add_argument("url", metavar="URL", help="s3://bucket/key of a checkpoint, or a prefix")
    parser.add_argument(
        "-r", "--recursive", action="store_true", help="delete every object under URL/ (a folder)"
    )
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
    """Delete what URL names, after confirmation."""
    url = s3_url(args.url)
    with open_store(args) as store:
        if not args.recursive:
            if url.endswith("/"):
                raise UsageError(f"{url} is a prefix; pass --recursive to delete everything under it")
            try:
                info = store.head(url)
            except S3NotFoundError:
                if store.exists(url, match_directory=True):
                    raise UsageError(
                        f"{url} is a folder, not an object; pass --recursive to delete everything under it"
                    ) from None
                raise
            if not args.yes and not console.confirm(f"delete {url} ({human_size(info.size)})?"):
                console.note("nothing deleted")
                return exit_codes.FAILURE
            store.delete(url)
            console.print(f"deleted {url}")
            return exit_codes.OK

        prefix = as_prefix(url)
        sample = list(itertools.islice(store.iter_objects(prefix), 1))
        if not sample:
            raise S3NotFoundError(f"nothing under {prefix}; check the bucket and the prefix")
        if not args.yes:
            count = sum(1 for _ in store.iter_objects(prefix))
            if not console.confirm(f"delete all {count} objects under {prefix}?"):
                console.note("nothing deleted")
                return exit_codes.FAILURE
        deleted = store.delete_prefix(prefix)
        console.print(f"deleted {deleted} objects under {prefix}")
        return exit_codes.OK
