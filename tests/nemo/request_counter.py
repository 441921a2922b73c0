"""A counting HTTP proxy in front of the moto server, to see which S3 requests a run makes.

Every request is forwarded unchanged to the upstream server; the proxy records its S3 operation name
(``ListObjectsV2``, ``HeadObject``, ``PutObject`` ...) so a test can assert how many listings a resume
made. It listens on 127.0.0.1 only and is stopped by its owner (a context manager).
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
}


def operation_name(method: str, target: str) -> str:
    """The S3 operation an HTTP request is, from its method, path and query (path-style addressing)."""
    parsed = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    has_key = "/" in parsed.path.strip("/")
    if method == "GET":
        if not has_key:
            if query.get("list-type") == ["2"]:
                return "ListObjectsV2"
            if "uploads" in query:
                return "ListMultipartUploads"
            return "ListObjects"
        return "ListParts" if "uploadId" in query else "GetObject"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPart"
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in query else "Post"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteObject" if has_key else "DeleteBucket"
    return method


class CountingProxy:
    """Forward HTTP to ``upstream_url`` and count S3 operations by name."""

    def __init__(self, upstream_url: str) -> None:
        parsed = urllib.parse.urlsplit(upstream_url)
        self._upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                proxy._record(operation_name(self.command, self.path))
                body = self._read_body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                connection = http.client.HTTPConnection(*proxy._upstream, timeout=60)
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                finally:
                    connection.close()
                self.send_response_only(response.status, response.reason)
                # A HEAD answer carries the object's length with no body: pass it through as is.
                keep_length = self.command == "HEAD"
                for name, value in response.getheaders():
                    if name.lower() in _HOP_BY_HOP or (name.lower() == "content-length" and not keep_length):
                        continue
                    self.send_header(name, value)
                if not keep_length:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _read_body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length", "0") or 0)
                return self.rfile.read(length) if length else None

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="counting-proxy", daemon=True)

    @property
    def url(self) -> str:
        """The proxy's endpoint URL, to use as ``AWS_ENDPOINT_URL``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _record(self, operation: str) -> None:
        with self._lock:
            self._counts[operation] += 1

    def count(self, operation: str) -> int:
        """How many requests of ``operation`` went through so far."""
        with self._lock:
            return self._counts[operation]

    def counts(self) -> dict[str, int]:
        """Every operation seen so far, with its count."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        """Forget every count."""
        with self._lock:
            self._counts.clear()

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@contextmanager
def counting_proxy(upstream_url: str) -> Iterator[CountingProxy]:
    """A started :class:`CountingProxy`, stopped on exit."""
    proxy = CountingProxy(upstream_url).start()
    try:
        yield proxy
    finally:
        proxy.stop()
