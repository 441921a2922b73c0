"""A small threaded HTTP reverse proxy on 127.0.0.1 that injects S3 faults in front of a real server.

Clients point their endpoint at ``proxy.url``; every request is forwarded to ``upstream_url`` unless a
fault matches it. Each request is recorded with the S3 operation it is, classified from the method,
path and query (path-style addressing, which botocore uses for an IP endpoint).

    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add_fault("UploadPart", "slowdown", probability=0.3, seed=1)
        ...
        assert proxy.count("UploadPart") == parts + proxy.injected

Actions:
    ``slowdown``: answer 503 SlowDown (not forwarded).
    ``internal_error``: answer 500 InternalError (not forwarded).
    ``reset_mid_body``: a request with a body has half of it read, then the connection is reset; a
        request without one is forwarded and half of the answer's body is sent, then the connection is
        reset.
    ``delay``: wait ``delay_s`` seconds, then forward normally.
    ``access_denied``: answer 403 AccessDenied (not forwarded).
    ``stall``: read the request, then answer nothing: hold the connection open until the client gives
        up, the proxy stops, or ``delay_s`` seconds pass (then close it), as a silent server would.

S3's request-rate limits: ``FaultProxy(upstream, request_rates=S3RequestRates(...).scaled(0.01))``
(``support.request_rates``) answers 503 SlowDown, unforwarded, to each request past the limits of its
key's partition; :attr:`FaultProxy.throttled` counts them per operation. ``GET /__rates__/stats`` and
``POST /__rates__/reset`` on the proxy answer and reset :meth:`FaultProxy.stats` (for another process).

The API (constructor, start/stop, url, requests, count, add_fault, clear_faults, injected) is used by
every layer's tests: keep it stable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import random
import select
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # support.request_rates imports s3_utils, which not every nox session has
    from support.request_rates import RequestRateEmulator, S3RequestRates

ACTIONS = (
    "slowdown",
    "internal_error",
    "reset_mid_body",
    "delay",
    "access_denied",
    "stall",
    "not_implemented",
)
OPERATIONS = (
    "ListObjectsV2",
    "ListObjects",
    "HeadObject",
    "GetObject",
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CopyObject",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "DeleteObject",
    "DeleteObjects",
    "ListMultipartUploads",
    "CreateBucket",
    "HeadBucket",
    "Other",
)
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
}
_UPSTREAM_TIMEOUT_S = 60.0
_STALL_POLL_S = 0.1
CONTROL_PATH = "/__rates__/"
"""Paths under this one are the proxy's own (``stats``, ``reset``); no S3 bucket name has underscores."""
THROTTLED = "request_rate"
"""The ``fault`` of a request the request-rate emulator answered 503 SlowDown."""

_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
)


def classify(method: str, path: str, query: dict[str, str], copy_source: bool = False) -> str:
    """The S3 operation a path-style request is (one of :data:`OPERATIONS`); ``copy_source``: the
    request has an ``x-amz-copy-source`` header (a PUT that copies instead of uploading)."""
    parts = path.lstrip("/").split("/", 1)
    bucket = parts[0]
    key = parts[1] if len(parts) > 1 else ""
    if not bucket or bucket == "moto-api":
        return "Other"
    if not key:
        if method == "PUT" and not query:
            return "CreateBucket"
        if method == "HEAD":
            return "HeadBucket"
        if method == "GET":
            if "uploads" in query:
                return "ListMultipartUploads"
            if query.get("list-type") == "2":
                return "ListObjectsV2"
            if set(query) <= {"prefix", "marker", "delimiter", "max-keys", "encoding-type"}:
                return "ListObjects"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        return "Other"
    if method == "GET":
        return "Other" if "uploadId" in query else "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            return "UploadPartCopy" if copy_source else "UploadPart"
        if not query:
            return "CopyObject" if copy_source else "PutObject"
        return "Other"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "Other"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return "Other"


@dataclass(frozen=True)
class RequestRecord:
    """One request the proxy saw, and what was answered (``status`` 0: the connection was reset)."""

    method: str
    path: str
    query: dict[str, str]
    operation: str
    status: int
    fault: str | None = None


@dataclass
class _Fault:
    operation: str | None
    action: str
    probability: float
    times: int | None
    delay_s: float
    rng: random.Random
    path_contains: str | None = None
    injected: int = 0

    def fires(self, operation: str, path: str) -> bool:
        if self.operation is not None and self.operation != operation:
            return False
        if self.path_contains is not None and self.path_contains not in path:
            return False
        if self.times is not None and self.injected >= self.times:
            return False
        return self.rng.random() < self.probability


def rate_key(path: str, query: dict[str, str]) -> str:
    """The ``bucket/key`` whose partition serves a path-style request (a listing: its prefix)."""
    key = urllib.parse.unquote(path).lstrip("/")
    if "/" not in key.rstrip("/"):
        return f"{key.rstrip('/')}/{query.get('prefix', '')}"
    return key


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: list[_Fault] = field(default_factory=list)
    records: list[RequestRecord] = field(default_factory=list)
    keep_requests: bool = True
    keep_upstream_alive: bool = False
    operations: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)
    get_body_bytes: int = 0
    injected: int = 0
    emulator: RequestRateEmulator | None = None

    def record(self, request: RequestRecord, get_body_bytes: int = 0) -> None:
        with self.lock:
            if self.keep_requests:
                self.records.append(request)
            self.operations[request.operation] += 1
            if request.fault == THROTTLED:
                self.throttled[request.operation] += 1
            self.get_body_bytes += get_body_bytes

    def stats(self) -> dict[str, Any]:
        with self.lock:
            emulator = self.emulator
            stats: dict[str, Any] = {
                "requests": dict(self.operations),
                "throttled": dict(self.throttled),
                "get_body_bytes": self.get_body_bytes,
            }
        stats["classes"] = emulator.counts() if emulator is not None else None
        stats["rates"] = dataclasses.asdict(emulator.rates) if emulator is not None else None
        return stats

    def reset_stats(self) -> None:
        with self.lock:
            self.records.clear()
            self.operations.clear()
            self.throttled.clear()
            self.get_body_bytes = 0
            emulator = self.emulator
        if emulator is not None:
            emulator.reset()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: _State, upstream: urllib.parse.SplitResult, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state
        self.upstream = upstream
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut every open client connection, as a dead server's would be."""
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: tests assert on .requests instead

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        if parsed.path.startswith(CONTROL_PATH):
            self._control(parsed.path[len(CONTROL_PATH) :])
            return
        query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        operation = classify(self.command, parsed.path, query, "x-amz-copy-source" in self.headers)
        state = self.server.state
        with state.lock:
            fault = next(
                (f for f in state.faults if f.fires(operation, urllib.parse.unquote(parsed.path))), None
            )
            if fault is not None:
                fault.injected += 1
                state.injected += 1
            emulator = state.emulator
        action = fault.action if fault is not None else None
        reaches_s3 = action in (None, "delay")
        if (
            reaches_s3
            and emulator is not None
            and not emulator.admit(operation, rate_key(parsed.path, query))
        ):
            action = THROTTLED

        def record(status: int, sent: int = 0) -> None:
            get_body_bytes = sent if operation == "GetObject" else 0
            state.record(
                RequestRecord(self.command, parsed.path, query, operation, status, action), get_body_bytes
            )

        length = int(self.headers.get("Content-Length") or 0)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if action == "reset_mid_body" and (length > 0 or chunked):
            self.rfile.read(max(1, length // 2))
            record(0)
            self._reset()
            return
        body = self._read_chunked() if chunked else self.rfile.read(length) if length else b""
        if action in ("slowdown", THROTTLED):
            record(503)
            self._answer_error(503, "SlowDown", "Please reduce your request rate.")
            return
        if action == "internal_error":
            record(500)
            self._answer_error(500, "InternalError", "We encountered an internal error. Please try again.")
            return
        if action == "access_denied":
            record(403)
            self._answer_error(403, "AccessDenied", "Access Denied")
            return
        if action == "not_implemented":
            record(501)
            self._answer_error(
                501, "NotImplemented", "A header you provided implies functionality that is not implemented."
            )
            return
        if action == "stall" and fault is not None:
            record(0)
            self._stall(fault.delay_s)
            return
        if action == "delay" and fault is not None:
            time.sleep(fault.delay_s)
        try:
            status, headers, answer = self._forward(parsed, body)
        except OSError:
            record(502)
            self._answer_error(502, "BadGateway", "The upstream S3 server did not answer.")
            return
        if action == "reset_mid_body" and answer:
            record(0, len(answer) // 2)
            self._send_head(status, headers, len(answer))
            self.wfile.write(answer[: len(answer) // 2])
            self.wfile.flush()
            self._reset()
            return
        record(status, len(answer) if self.command != "HEAD" else 0)
        self._send_head(status, headers, len(answer) if self.command != "HEAD" else None)
        if self.command != "HEAD":
            self.wfile.write(answer)

    def _control(self, name: str) -> None:
        """Answer ``GET stats`` (JSON) or ``POST reset`` (204) on the proxy's own paths."""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        state = self.server.state
        if self.command == "GET" and name == "stats":
            body = json.dumps(state.stats()).encode()
            self.send_response_only(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.command == "POST" and name == "reset":
            state.reset_stats()
            self.send_response_only(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._answer_error(
                404, "NoSuchControl", f"{self.command} {CONTROL_PATH}{name}: use GET stats or POST reset"
            )

    def _read_chunked(self) -> bytes:
        data = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline().strip():
                    pass  # trailers
                return bytes(data)
            data += self.rfile.read(size)
            self.rfile.readline()

    def setup(self) -> None:
        super().setup()
        self._kept_upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        super().finish()
        if self._kept_upstream is not None:
            self._kept_upstream.close()

    def _forward(
        self, parsed: urllib.parse.SplitResult, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        kept, self._kept_upstream = self._kept_upstream, None
        if kept is not None:
            try:
                return self._exchange(kept, parsed, body)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                pass  # the upstream closed the kept connection while it was idle: send on a new one
        upstream = self.server.upstream
        connection = http.client.HTTPConnection(
            upstream.hostname or "127.0.0.1", upstream.port, timeout=_UPSTREAM_TIMEOUT_S
        )
        return self._exchange(connection, parsed, body)

    def _exchange(
        self, connection: http.client.HTTPConnection, parsed: urllib.parse.SplitResult, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send this request on ``connection`` and read the answer; keep the connection for this client
        connection's next request if the proxy keeps upstream connections alive, else close it."""
        try:
            target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
            connection.putrequest(self.command, target, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() in _HOP_BY_HOP or name.lower() in {"content-length", "expect"}:
                    continue
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            answer = response.read()
        except BaseException:
            connection.close()
            raise
        if self.server.state.keep_upstream_alive and not response.will_close:
            self._kept_upstream = connection
        else:
            connection.close()
        return response.status, response.getheaders(), answer

    def _send_head(self, status: int, headers: list[tuple[str, str]], length: int | None) -> None:
        self.send_response_only(status)
        for name, value in headers:
            if name.lower() in _HOP_BY_HOP or (length is not None and name.lower() == "content-length"):
                continue
            self.send_header(name, value)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _answer_error(self, status: int, code: str, message: str) -> None:
        body = _ERROR_BODY.format(code=code, message=message).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body) if self.command != "HEAD" else 0))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _stall(self, limit_s: float) -> None:
        """Say nothing until the client hangs up, the proxy stops, or ``limit_s`` passes; then close."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.connection], [], [], _STALL_POLL_S)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        break  # the client closed the connection (it timed out)
                except OSError:
                    break
                time.sleep(_STALL_POLL_S)  # a pipelined byte: still say nothing
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _reset(self) -> None:
        """Close the connection with a TCP RST (SO_LINGER 0), as a crashed peer or middlebox would."""
        with contextlib.suppress(OSError):
            self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


class FaultProxy:
    """A fault-injecting reverse proxy on 127.0.0.1 in front of ``upstream_url``.

    Args:
        upstream_url: the real server, e.g. ``s3_server.endpoint_url``.
        request_rates: S3's request-rate limits to emulate (None: no limit); see
            :meth:`set_request_rates`.
        keep_requests: keep every request in :attr:`requests` (False: only the counts, for a long
            benchmark whose millions of requests would fill memory).
        keep_upstream_alive: send each client connection's requests on one kept-alive upstream
            connection (a benchmark's throughput) instead of a new one per request (False: each request
            is on its own upstream connection, so a fault or restart never meets a stale one).
    """

    def __init__(
        self,
        upstream_url: str,
        request_rates: S3RequestRates | None = None,
        keep_requests: bool = True,
        keep_upstream_alive: bool = False,
    ) -> None:
        self.upstream_url = upstream_url
        self._upstream = urllib.parse.urlsplit(upstream_url)
        self._state = _State(keep_requests=keep_requests, keep_upstream_alive=keep_upstream_alive)
        self.set_request_rates(request_rates)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        """The proxy's endpoint URL (use it as ``endpoint_url``)."""
        if self._port is None:
            raise RuntimeError("FaultProxy is not started")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FaultProxy:
        """Start serving on a free port (the same port again after a stop)."""
        if self._server is not None:
            return self
        if self._port is None:
            server = _Server(self._state, self._upstream)
        else:
            server = _rebind(self._state, self._upstream, self._port)
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open connections; new ones are refused until :meth:`start`."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def add_fault(
        self,
        operation: str | None = None,
        action: str = "slowdown",
        probability: float = 1.0,
        times: int | None = None,
        delay_s: float = 0.0,
        seed: int = 0,
        path_contains: str | None = None,
    ) -> None:
        """Inject ``action`` into requests of ``operation`` (None: every request).

        Args:
            operation: an S3 operation name from :data:`OPERATIONS`, or None for all.
            action: one of :data:`ACTIONS`.
            probability: chance that a matching request gets the fault (seeded, so runs repeat).
            times: stop after injecting this many (None: no limit).
            delay_s: for ``delay``, how long to wait before forwarding; for ``stall``, how long to hold
                the connection silent at most (0: until the client or the proxy closes it, up to an hour).
            seed: seeds this fault's random choices.
            path_contains: only requests whose decoded path (``/bucket/key``) contains this text.
        """
        if action not in ACTIONS:
            raise ValueError(f"action={action!r}: use one of {ACTIONS}")
        if operation is not None and operation not in OPERATIONS:
            raise ValueError(f"operation={operation!r}: use one of {OPERATIONS} or None")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability={probability!r} must be within [0, 1]")
        if action == "stall" and delay_s <= 0:
            delay_s = 3600.0
        fault = _Fault(operation, action, probability, times, delay_s, random.Random(seed), path_contains)
        with self._state.lock:
            self._state.faults.append(fault)

    def clear_faults(self) -> None:
        """Remove every fault (the counts of what was injected stay)."""
        with self._state.lock:
            self._state.faults.clear()

    def set_request_rates(self, request_rates: S3RequestRates | None) -> None:
        """Emulate ``request_rates`` from now on, with fresh (full) token buckets; None: no limits.

        A request past its partition's limit is answered 503 SlowDown (S3's body) without being
        forwarded, recorded with ``fault="request_rate"`` and counted in :attr:`throttled`. Injected
        faults come first: a request that gets one (other than ``delay``) never reaches the emulator.
        """
        emulator = None
        if request_rates is not None:
            from support.request_rates import RequestRateEmulator

            emulator = RequestRateEmulator(request_rates)
        with self._state.lock:
            self._state.emulator = emulator

    @property
    def emulator(self) -> RequestRateEmulator | None:
        """The request-rate emulator in use (None: no limits)."""
        with self._state.lock:
            return self._state.emulator

    @property
    def throttled(self) -> Counter[str]:
        """Requests answered 503 SlowDown by the request-rate emulator, per operation (a copy)."""
        with self._state.lock:
            return Counter(self._state.throttled)

    @property
    def get_body_bytes(self) -> int:
        """Bytes of GetObject answer bodies sent to clients so far."""
        with self._state.lock:
            return self._state.get_body_bytes

    def stats(self) -> dict[str, Any]:
        """What ``GET /__rates__/stats`` answers: ``requests`` and ``throttled`` per operation,
        ``get_body_bytes``, and the emulator's ``classes`` (admitted/throttled per class) and ``rates``
        (None without an emulator)."""
        return self._state.stats()

    def reset_stats(self) -> None:
        """Start the requests, their counts and the GetObject bytes from zero, and refill the emulator's
        buckets (what ``POST /__rates__/reset`` does). Faults and :attr:`injected` stay."""
        self._state.reset_stats()

    @property
    def injected(self) -> int:
        """How many faults were injected so far."""
        with self._state.lock:
            return self._state.injected

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request seen so far, in arrival order (a copy)."""
        with self._state.lock:
            return list(self._state.records)

    def count(self, operation: str) -> int:
        """How many requests of ``operation`` were seen (faulted ones included)."""
        with self._state.lock:
            return self._state.operations[operation]

    def first_success(self, operation: str, path_end: str) -> int:
        """The arrival index of the first successful ``operation`` on a path ending in ``path_end``.

        Raises:
            StopIteration: if no such request succeeded.
        """
        return next(
            i
            for i, r in enumerate(self.requests)
            if r.operation == operation and urllib.parse.unquote(r.path).endswith(path_end) and r.status < 300
        )

    def counts(self) -> dict[str, int]:
        """How many requests of each operation were seen, e.g. ``{"ListObjectsV2": 1}``."""
        with self._state.lock:
            return dict(self._state.operations)


def _rebind(state: _State, upstream: urllib.parse.SplitResult, port: int) -> _Server:
    """A server on ``port`` again (after a stop), retrying briefly while the OS releases it."""
    deadline = time.monotonic() + 5.0
    while True:
        try:
            return _Server(state, upstream, port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
