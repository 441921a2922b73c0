"""The shared fault proxy classifies S3 operations and injects exactly the faults it is asked for."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from support.fault_proxy import FaultProxy, classify
from support.s3_server import TEST_REGION


def client_via(proxy: FaultProxy) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=proxy.url,
        region_name=TEST_REGION,
        config=Config(retries={"total_max_attempts": 1}),
    )


@pytest.mark.parametrize(
    ("method", "path", "query", "operation"),
    [
        ("GET", "/b", {"list-type": "2", "prefix": "x"}, "ListObjectsV2"),
        ("GET", "/b", {"prefix": "x"}, "ListObjects"),
        ("GET", "/b", {"uploads": ""}, "ListMultipartUploads"),
        ("HEAD", "/b/k", {}, "HeadObject"),
        ("GET", "/b/k", {}, "GetObject"),
        ("PUT", "/b/k", {}, "PutObject"),
        ("POST", "/b/k", {"uploads": ""}, "CreateMultipartUpload"),
        ("PUT", "/b/k", {"partNumber": "1", "uploadId": "u"}, "UploadPart"),
        ("POST", "/b/k", {"uploadId": "u"}, "CompleteMultipartUpload"),
        ("DELETE", "/b/k", {"uploadId": "u"}, "AbortMultipartUpload"),
        ("DELETE", "/b/k", {}, "DeleteObject"),
        ("POST", "/b", {"delete": ""}, "DeleteObjects"),
        ("PUT", "/b", {}, "CreateBucket"),
        ("HEAD", "/b", {}, "HeadBucket"),
        ("GET", "/", {}, "Other"),
        ("GET", "/b/k", {"uploadId": "u"}, "Other"),
    ],
)
def test_classify(method: str, path: str, query: dict[str, str], operation: str) -> None:
    assert classify(method, path, query) == operation


def test_faults_fire_the_requested_number_of_times(fault_proxy: FaultProxy, bucket: str) -> None:
    client = client_via(fault_proxy)
    fault_proxy.add_fault("PutObject", "slowdown", times=2)
    codes = []
    for _ in range(3):
        try:
            client.put_object(Bucket=bucket, Key="k", Body=b"x")
            codes.append(200)
        except ClientError as exc:
            codes.append(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    assert codes == [503, 503, 200]
    assert fault_proxy.injected == 2
    assert [r.status for r in fault_proxy.requests if r.operation == "PutObject"] == [503, 503, 200]

    fault_proxy.add_fault("HeadObject", "internal_error")
    with pytest.raises(ClientError):
        client.head_object(Bucket=bucket, Key="k")
    fault_proxy.clear_faults()
    assert client.head_object(Bucket=bucket, Key="k")["ContentLength"] == 1
    assert fault_proxy.count("HeadObject") == 2


def test_seeded_probability_repeats(fault_proxy: FaultProxy, bucket: str) -> None:
    client = client_via(fault_proxy)
    outcomes = []
    for _ in range(2):
        fault_proxy.clear_faults()
        fault_proxy.add_fault("HeadBucket", "slowdown", probability=0.5, seed=42)
        run = []
        for _ in range(12):
            try:
                client.head_bucket(Bucket=bucket)
                run.append(True)
            except ClientError:
                run.append(False)
        outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert 0 < outcomes[0].count(False) < 12


def test_stop_refuses_and_start_serves_on_the_same_url(fault_proxy: FaultProxy, bucket: str) -> None:
    url = fault_proxy.url
    fault_proxy.stop()
    with pytest.raises(Exception, match="Could not connect"):
        client_via(fault_proxy).head_bucket(Bucket=bucket)
    fault_proxy.start()
    assert fault_proxy.url == url
    client_via(fault_proxy).head_bucket(Bucket=bucket)


def test_bad_fault_arguments_are_rejected(fault_proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="action='explode'"):
        fault_proxy.add_fault(action="explode")
    with pytest.raises(ValueError, match="operation='GetThing'"):
        fault_proxy.add_fault("GetThing")
