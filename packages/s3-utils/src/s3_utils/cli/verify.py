"""``s3ckpt verify URL``: check a checkpoint's bytes against its stored checksums, and that it loads."""

from __future__ import annotations

import argparse

from s3_utils import ObjectInfo, TransferConfig
from s3_utils.cli import exit_codes
from s3_utils.cli.console import Console
from s3_utils.cli.formatting import human_size
from s3_utils.cli.integrity import Check, check_crc32c, check_etag, parts_in
from s3_utils.cli.plugins import load_plugins
from s3_utils.cli.store import client_config, open_store
from s3_utils.cli.urls import s3_url
from s3_utils.client import get_client, pool_size
from s3_utils.retry import Requester

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
    parser.add_argument("url", metavar="URL", help="s3://bucket/key of one checkpoint file")
    parser.add_argument("--no-load", action="store_true", help="check the checksum only")
    parser.add_argument(
        "--trust",
        action="store_true",
        help="load with weights_only=False (runs pickled code: only for checkpoints you trust)",
    )
    parser.set_defaults(run=run)


def first_part_size(args: argparse.Namespace, info: ObjectInfo) -> int | None:
    """The size of part 1 of a multipart object (all parts but the last share it), or None if single."""
    if parts_in(info.etag) is None and parts_in(info.checksum_crc32c) is None:
        return None
    config = client_config(args)
    transfer = TransferConfig()
    client = get_client(config, pool_size(config, transfer.max_concurrency))
    answer = Requester(transfer, config.endpoint_name).call(
        lambda: client.head_object(Bucket=info.bucket, Key=info.key, PartNumber=1, IfMatch=info.etag),
        operation="HeadObject",
        bucket=info.bucket,
        key=info.key,
    )
    return int(answer["ContentLength"])


def run(args: argparse.Namespace, console: Console) -> int:
    """Download, recompute the checksums, try to load; exit code 4 if anything does not match."""
    url = s3_url(args.url)
    with open_store(args) as store:
        info = store.head(url)
        part_size = first_part_size(args, info)
        with console.progress_line(url.rsplit("/", 1)[-1], info.size) as progress:
            data = store.download_bytes(url)
            progress.add(len(data))

    checks: list[Check] = [
        Check("size", len(data) == info.size, f"{human_size(len(data))} read, {info.size} bytes stored")
    ]
    crc = check_crc32c(data, info.checksum_crc32c, part_size)
    checks.append(crc)
    if crc.ok is None:  # an ETag is only a fallback: it is not an MD5 for KMS-encrypted objects
        checks.append(check_etag(data, info.etag, part_size))
    checks.extend(_load_checks(args, data, url))

    for check in checks:
        state = {True: "ok", False: "FAILED", None: "skipped"}[check.ok]
        console.print(f"{check.name:<8}{state:<9}{check.detail}")
    if any(c.ok is False for c in checks):
        console.print(f"BAD: {url}")
        return exit_codes.CHECK_FAILED
    if not any(c.ok for c in checks if c.name in ("crc32c", "etag")):
        console.note(f"warning: no stored checksum of {url} could be compared")
    console.print(f"verified {url}")
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
