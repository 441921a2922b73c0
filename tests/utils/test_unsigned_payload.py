"""Upload bodies are not SHA-256-signed: the CRC64NVME each request carries already covers the bytes.

botocore signs every body sent to an ``http://`` endpoint unless told not to, hashing each part a
second time (and, with awscrt installed, holding the GIL for the whole hash). A loopback proxy that
records each request's headers and body shows what actually goes on the wire.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from s3_utils import checksums
from support.payloads import payload
from support.s3_server import MotoServer
from support.stores import CHUNK, small_store


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RecordingProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.sent.append(Sent(self.command, self.path, headers, body))
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        try:
            upstream.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
            response = upstream.getresponse()
            answer = response.read()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                    self.send_header(name, value)
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(answer)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer)
        finally:
            upstream.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle


class _RecordingProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream_url: str) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.upstream = urllib.parse.urlsplit(upstream_url).netloc
        self.sent: list[Sent] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def recording_proxy(s3_server: MotoServer) -> Iterator[_RecordingProxy]:
    proxy = _RecordingProxy(s3_server.endpoint_url)
    thread = threading.Thread(target=proxy.serve_forever, name="recording-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize("size", [1000, 2 * CHUNK + 7], ids=["single-put", "multipart"])
def test_upload_bodies_are_sent_unsigned_with_their_crc64nvme(
    recording_proxy: _RecordingProxy, bucket: str, size: int
) -> None:
    data = payload(size)
    url = f"s3://{bucket}/unsigned.ckpt"
    with small_store(endpoint_url=recording_proxy.url) as store:
        store.upload_bytes(url, data)
        assert store.download_bytes(url) == data
    with_body = [s for s in recording_proxy.sent if s.method == "PUT"]
    assert with_body, "no PUT went through the proxy"
    assert sum(len(s.body) for s in with_body) == size
    for sent in with_body:
        assert sent.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
        # integrity stays end to end: the CRC the server checks is the CRC of the bytes it received
        assert sent.headers["x-amz-checksum-crc64nvme"] == checksums.to_base64(checksums.crc(sent.body))
