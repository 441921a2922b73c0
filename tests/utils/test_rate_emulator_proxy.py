"""S3's request-rate limits emulated in front of a real server: the proxy answers 503 SlowDown past them,
s3_utils retries through it, and the standalone CLI proxy reports its counts to another process."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from support.fault_proxy import THROTTLED, FaultProxy
from support.request_rates import S3RequestRates
from support.s3_server import TEST_REGION, MotoServer, running_moto_server
from support.stores import small_store

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "support" / "request_rates.py"
PATIENT_RETRIES = {"retry_base_delay_s": 0.005, "retry_max_delay_s": 0.05, "retry_total_s": 60.0}
START_TIMEOUT_S = 30.0


def one_attempt_client(endpoint_url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=TEST_REGION,
        config=Config(retries={"total_max_attempts": 1}),
    )


def test_a_put_past_the_limit_is_answered_slowdown_and_not_forwarded(
    s3_server: MotoServer, bucket: str
) -> None:
    with FaultProxy(s3_server.endpoint_url, S3RequestRates(put_per_s=1, get_per_s=1, burst_s=1)) as proxy:
        client = one_attempt_client(proxy.url)
        client.put_object(Bucket=bucket, Key="p/first", Body=b"1")
        with pytest.raises(ClientError) as raised:
            client.put_object(Bucket=bucket, Key="p/second", Body=b"2")
        client.get_object(Bucket=bucket, Key="p/first")  # the GET class has its own bucket

    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert error["Error"] == {"Code": "SlowDown", "Message": "Please reduce your request rate."}
    listed = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["p/first"]
    assert proxy.throttled == {"PutObject": 1}
    assert [(r.operation, r.status, r.fault) for r in proxy.requests] == [
        ("PutObject", 200, None),
        ("PutObject", 503, THROTTLED),
        ("GetObject", 200, None),
    ]
    assert proxy.get_body_bytes == 1


def test_a_burst_of_puts_past_the_limit_is_throttled_and_s3_utils_retries_it_to_success(
    s3_server: MotoServer, bucket: str
) -> None:
    keys = [f"{rank:02x}ab/rank{rank}/shard.{i}" for rank in range(4) for i in range(10)]  # 4 prefixes
    rates = S3RequestRates(put_per_s=20, get_per_s=20, burst_s=0.25)  # 5 at once per prefix
    with (
        FaultProxy(s3_server.endpoint_url, rates) as proxy,
        small_store(proxy.url, **PATIENT_RETRIES) as store,
        ThreadPoolExecutor(8) as pool,
    ):
        list(pool.map(lambda key: store.upload_bytes(f"s3://{bucket}/{key}", key.encode()), keys))
        stats = proxy.stats()

    listed = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(keys)
    assert proxy.throttled["PutObject"] > 0
    assert stats["throttled"] == dict(proxy.throttled)
    assert stats["requests"]["PutObject"] == len(keys) + proxy.throttled["PutObject"]
    assert stats["classes"]["PUT"] == {"admitted": len(keys), "throttled": proxy.throttled["PutObject"]}
    assert all(r.status == 503 for r in proxy.requests if r.fault == THROTTLED)


def test_reset_stats_starts_the_counts_and_the_buckets_again(s3_server: MotoServer, bucket: str) -> None:
    with FaultProxy(s3_server.endpoint_url, S3RequestRates(put_per_s=1, get_per_s=1, burst_s=1)) as proxy:
        client = one_attempt_client(proxy.url)
        client.put_object(Bucket=bucket, Key="k", Body=b"1")
        with pytest.raises(ClientError):
            client.put_object(Bucket=bucket, Key="k", Body=b"2")
        proxy.reset_stats()
        assert proxy.stats()["requests"] == {}
        client.put_object(Bucket=bucket, Key="k", Body=b"3")  # a full bucket again
        proxy.set_request_rates(None)
        for _ in range(5):
            client.put_object(Bucket=bucket, Key="k", Body=b"4")

    assert proxy.counts() == {"PutObject": 6}
    assert proxy.throttled == {}
    assert proxy.stats()["classes"] is None


def test_the_cli_proxy_serves_its_stats_to_another_process_and_exits_0_on_sigterm(
    s3_server: MotoServer, bucket: str, tmp_path: pathlib.Path
) -> None:
    port_file = tmp_path / "rates.port"
    command = [sys.executable, str(SCRIPT), "--upstream", s3_server.endpoint_url, "--put-per-s", "1"]
    command += ["--get-per-s", "1", "--burst-s", "1", "--port-file", str(port_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert port_file.exists(), process.communicate(timeout=10)
        url = f"http://127.0.0.1:{port_file.read_text()}"
        client = one_attempt_client(url)
        errors = []
        for i in range(5):
            try:
                client.put_object(Bucket=bucket, Key=f"cli/{i}", Body=b"x")
            except ClientError as error:
                errors.append(error.response["Error"]["Code"])
        with urllib.request.urlopen(f"{url}/__rates__/stats", timeout=10) as answer:
            stats = json.load(answer)
        urllib.request.urlopen(urllib.request.Request(f"{url}/__rates__/reset", method="POST"), timeout=10)
        with urllib.request.urlopen(f"{url}/__rates__/stats", timeout=10) as answer:
            after_reset = json.load(answer)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    slowdowns = len(errors)
    assert errors == ["SlowDown"] * slowdowns
    assert slowdowns >= 1  # at 1 PUT/s with a burst of 1, 5 PUTs within 4 s cannot all pass
    assert stats["requests"] == {"PutObject": 5}
    assert stats["throttled"] == {"PutObject": slowdowns}
    assert stats["rates"] == {"put_per_s": 1.0, "get_per_s": 1.0, "burst_s": 1.0, "split_after_s": None}
    assert after_reset["requests"] == {}
    assert after_reset["classes"]["PUT"] == {"admitted": 0, "throttled": 0}


def test_a_kept_upstream_connection_that_the_server_closed_is_replaced_transparently() -> None:
    with running_moto_server() as server, FaultProxy(server.endpoint_url, keep_upstream_alive=True) as proxy:
        client = one_attempt_client(proxy.url)
        client.create_bucket(Bucket="kept")
        client.put_object(Bucket="kept", Key="k", Body=b"before")
        server.restart()  # the upstream end of the kept connection is gone
        client.create_bucket(Bucket="kept")  # a fresh moto process has no buckets
        client.put_object(Bucket="kept", Key="k", Body=b"after")
        assert client.get_object(Bucket="kept", Key="k")["Body"].read() == b"after"

    assert [r.status for r in proxy.requests] == [200, 200, 200, 200, 200]
