"""Measure a DDP-like sharded load on N gloo ranks, replicated items shared or read by every rank.

    PYTHONPATH=tests:packages/s3-dirpath-utils/src:packages/s3-utils/src:packages/s3-checkpoint-io/src \
        python bench/replicated_reads.py --ranks 4 --model-mib 256

One moto server on 127.0.0.1; each load goes through its own counting proxy (``support.fault_proxy``),
so the shard GETs of the two loads are counted apart. Prints bytes downloaded (summed over the ranks,
from ``S3StorageReader.bytes_read``), shard GETs and the slowest rank's load time, for each mode.
Measurements only: nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import urllib.parse

from checkpoint_io.dcp import replicated_targets
from support.fault_proxy import FaultProxy
from support.ranks import launch
from support.s3_objects import created_bucket
from support.s3_server import MotoServer, new_bucket_name, s3_environment


def _shard_gets(proxy: FaultProxy) -> tuple[int, int]:
    """(shard GETs, of which not answered 2xx: retried)."""
    gets = [
        r for r in proxy.requests if r.operation == "GetObject" and ".distcp" in urllib.parse.unquote(r.path)
    ]
    return len(gets), sum(1 for r in gets if not 200 <= r.status < 300)


def main() -> None:
    """Run the two loads once and print one line per mode."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--model-mib", type=int, default=256)
    args = parser.parse_args()
    server = MotoServer().start()
    try:
        env = s3_environment(server.endpoint_url)
        with (
            created_bucket(server.client(), new_bucket_name()) as bucket,
            FaultProxy(server.endpoint_url) as shared,
            FaultProxy(server.endpoint_url) as each,
            tempfile.TemporaryDirectory() as out,
        ):
            url = f"s3://{bucket}/model"
            launch(
                replicated_targets.save_then_load_twice,
                world_size=args.ranks,
                args=[url, shared.url, each.url, out, str(args.model_mib)],
                timeout_s=600,
                env=env,
            )
            ranks = [json.loads((pathlib.Path(out) / f"rank{r}.json").read_text()) for r in range(args.ranks)]
            for mode, proxy in (("shared", shared), ("each", each)):
                read = sum(r[mode]["bytes_read"] for r in ranks) / 2**20
                seconds = max(r[mode]["seconds"] for r in ranks)
                equal = all(r[mode]["equal"] for r in ranks)
                print(
                    f"{mode:6} ranks={args.ranks} model={args.model_mib} MiB: downloaded {read:.0f} MiB "
                    f"({read / args.model_mib:.2f}x), shard GETs (failed) {_shard_gets(proxy)}, slowest rank "
                    f"{seconds:.2f} s, tensors equal: {equal}"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
