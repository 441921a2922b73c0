"""``s3ckpt verify URL``: check a checkpoint's bytes against its stored checksums, and that it loads."""

from __future__ import annotations

import argparse

from s3_dirpath_utils import parse_s3_url
from s3_utils.cli import exit_codes, sharded
from s3_utils.cli.console import Console, UsageError
from s3_utils.cli.formatting import human_size
from s3_utils.cli.integrity import Check
from s3_utils.cli.plugins import load_plugins
from s3_utils.cli.store import open_store
from s3_utils.cli.stored_object import read_stored_object, stored_checks
from s3_utils.cli.urls import s3_url

HELP = "check a checkpoint's bytes against its stored checksum, and that it loads"
INSTALL_HINT = "pip install s3-checkpoint-io"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``verify`` on the subcommand parser."""
    parser = sub.add_parser(
        "verify",
        help=HELP,
        description=HELP[0].upper() + HELP[1:] + ". The object is read whole into memory. Loading "
        f"needs torch: it is checked when s3-checkpoint-io is installed ({INSTALL_HINT}).",
    )
    parser.add_argument(
        "url", metavar="URL", help="s3://bucket/key of one checkpoint file or sharded checkpoint prefix"
    )
    parser.add_argument("--no-load", action="store_true", help="check the checksum only")
    parser.add_argument(
        "--trust",
        action="store_true",
        help="load with weights_only=False (runs pickled code: only for checkpoints you trust)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
    """Download, recompute the checksums, try to load; exit code 4 if anything does not match."""
    url = s3_url(args.url)
    _, key = parse_s3_url(url)
    if not key:
        raise UsageError(f"{url} names a bucket; verify checks one checkpoint (s3://bucket/key)")
    if _is_sharded_checkpoint(args, url):
        return _verify_sharded(args, url, console)
    if key.endswith("/"):
        raise UsageError(f"{url} names a prefix; verify checks one object (s3://bucket/key)")
    with open_store(args) as store:
        stored = read_stored_object(store, url)
        with console.progress_bar(key.rsplit("/", 1)[-1], stored.size) as progress:
            data = store.download_bytes(url, progress.update)

    checks = [Check("size", len(data) == stored.size, f"{len(data)} bytes read, {stored.size} stored")]
    checks.extend(stored_checks(data, stored))
    checks.extend(_load_checks(args, data, url))

    for check in checks:
        state = {True: "ok", False: "FAILED", None: "skipped"}[check.ok]
        console.print(f"{check.name:<10}{state:<9}{check.detail}")
    if any(c.ok is False for c in checks):
        console.print(f"BAD: {url}")
        return exit_codes.CHECK_FAILED
    if not any(c.ok for c in checks[1:3]):
        console.note(f"warning: no stored checksum of {url} could be compared")
    console.print(f"verified {url} ({human_size(stored.size)})")
    return exit_codes.OK


def _is_sharded_checkpoint(args: argparse.Namespace, url: str) -> bool:
    with open_store(args) as store:
        return sharded.is_sharded(store, url)


def _verify_sharded(args: argparse.Namespace, url: str, console: Console) -> int:
    """Every shard's checksum and the commit's references (loading is not tried: it needs every rank)."""
    with open_store(args) as store:
        checks = sharded.verify_sharded(store, url, console)
    for check in checks:
        state = {True: "ok", False: "FAILED", None: "skipped"}[check.ok]
        console.print(f"{check.name:<11}{state:<9}{check.detail}")
    if any(c.ok is False for c in checks):
        console.print(f"BAD: {url}")
        return exit_codes.CHECK_FAILED
    console.print(f"verified sharded checkpoint {url.rstrip('/')}/ ({len(checks)} checks)")
    return exit_codes.OK


def _load_checks(args: argparse.Namespace, data: bytearray, url: str) -> list[Check]:
    if args.no_load:
        return [Check("loads", None, "not checked (--no-load)")]
    plugins = load_plugins()
    if not plugins:
        return [Check("loads", None, f"not checked: install s3-checkpoint-io ({INSTALL_HINT}) to check it")]
    results = []
    for plugin in plugins:
        try:
            detail = plugin.check_loads(data, url, weights_only=not args.trust)
        except Exception as exc:
            hint = "" if args.trust else " (if you trust this file, --trust loads it with weights_only=False)"
            results.append(Check("loads", False, f"{plugin.name}: {type(exc).__name__}: {exc}{hint}"))
        else:
            results.append(Check("loads", True, f"{plugin.name}: {detail}"))
    return results
