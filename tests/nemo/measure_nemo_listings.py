"""Count the S3 listings of one resume on 4 ranks: NeMo 3.0.0's own exp_manager vs s3_exp_manager.

A measurement for docs/nemo.md, not a test of NeMo. Run from the repository root:

    .venv-nemo/bin/python tests/nemo/measure_nemo_listings.py

It starts its own moto server and a fault proxy (used only to count requests) on 127.0.0.1,
stores one ``-last`` checkpoint (NeMo's own discovery refuses several), and runs exp_manager's resume
discovery on 4 ranks each way.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from nemo_app import discovery_rank_main, nemo_only_rank_main  # noqa: E402
from rank_env import rank_pythonpath  # noqa: E402

from support.fault_proxy import FaultProxy  # noqa: E402
from support.ranks import launch  # noqa: E402
from support.s3_server import new_bucket_name, running_moto_server, s3_environment  # noqa: E402

WORLD_SIZE = 4


def main() -> None:
    with running_moto_server() as server, tempfile.TemporaryDirectory() as tmp:
        client = server.client()
        bucket = new_bucket_name()
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="run/checkpoints/run--step=8-last.ckpt", Body=b"x")
        dirpath = f"s3://{bucket}/run/checkpoints"
        for label, target, args in (
            ("NeMo 3.0.0 exp_manager", nemo_only_rank_main, [f"{tmp}/nemo-logs", dirpath]),
            ("nemo_s3_integration", discovery_rank_main, [f"{tmp}/our-logs", dirpath]),
        ):
            with FaultProxy(server.endpoint_url) as proxy:
                env = s3_environment(proxy.url)
                env["PYTHONPATH"] = rank_pythonpath()
                results = launch(target, WORLD_SIZE, args, timeout_s=300, env=env)
                counts = proxy.counts()
            paths = sorted({line for r in results for line in r.output.splitlines() if "resume path" in line})
            listings = counts.get("ListObjectsV2", 0)
            print(f"{label}: {listings} ListObjectsV2 on {WORLD_SIZE} ranks; all requests: {counts}")
            for line in paths:
                print(f"    {line}")


if __name__ == "__main__":
    main()
