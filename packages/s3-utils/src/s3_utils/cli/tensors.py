"""``s3ckpt ls --tensors URL``: one checkpoint's tensors, read from its metadata without downloading it.

A sharded checkpoint's tensors come from its commit (one GET); a single file's from ranged reads of
its zip directory and pickle. Either way the plugin that knows torch's formats reads them.
"""

from __future__ import annotations

import argparse
import json

from s3_utils.cli import exit_codes
from s3_utils.cli.console import Console, UsageError
from s3_utils.cli.formatting import human_size
from s3_utils.cli.plugins import TensorInfo, commit_reader, file_describer, load_plugins
from s3_utils.cli.store import open_store
from s3_utils.cli.urls import s3_url
from s3_utils.errors import S3NotFoundError
from s3_utils.sharded import commit_url

INSTALL_HINT = "ls --tensors reads torch's formats: pip install s3-checkpoint-io"


def run(args: argparse.Namespace, console: Console) -> int:
    """Print the tensors of the checkpoint at ``args.url`` (a sharded prefix or one object)."""
    url = s3_url(args.url)
    plugins = load_plugins()
    with open_store(args) as store:
        commit = commit_url(url)
        if store.exists(commit):
            reader = commit_reader(plugins)
            if reader is None:
                raise UsageError(INSTALL_HINT)
            summary = reader.describe_commit(store.download_bytes(commit), commit)
            kind, listed = f"sharded checkpoint ({summary.kind})", summary.tensors
        elif not url.endswith("/") and store.exists(url):
            describer = file_describer(plugins)
            if describer is None:
                raise UsageError(INSTALL_HINT)
            try:
                kind, listed = "torch.save file", describer.describe_file(store, url)
            except ValueError as exc:
                raise UsageError(f"{exc}") from exc
        else:
            raise S3NotFoundError(f"no checkpoint at {url}: neither a commit ({commit}) nor an object")
    if args.json:
        console.print(
            json.dumps({"url": url, "kind": kind, "tensors": [_as_json(t) for t in listed]}, indent=2)
        )
        return exit_codes.OK
    console.print(f"{'DTYPE':<10}  {'SHAPE':<20}  {'SIZE':>10}  NAME")
    for info in listed:
        console.print(
            f"{info.dtype:<10}  {_shape(info.shape):<20}  {human_size(info.nbytes):>10}  {info.name}"
        )
    total = sum(t.nbytes for t in listed)
    console.print(f"{len(listed)} tensors, {human_size(total)} in {url} ({kind})")
    return exit_codes.OK


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _as_json(info: TensorInfo) -> dict[str, object]:
    return {"name": info.name, "dtype": info.dtype, "shape": list(info.shape), "bytes": info.nbytes}
