"""A discovery error on rank 0 (access denied) reaches every rank at once, not after a collective timeout."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rank_env import rank_pythonpath
from rank_probes import check_resume_failure_main

from support.ranks import launch
from support.s3_server import s3_environment

pytestmark = pytest.mark.timeout(180)

WORLD_SIZE = 3
_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message><RequestId>denied-1</RequestId></Error>"
)


class _DenyAll(BaseHTTPRequestHandler):
    """An S3 endpoint whose every answer is 403 AccessDenied, as for a role without s3:ListBucket."""

    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _deny(self) -> None:
        self.requests.append(f"{self.command} {self.path}")
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(_DENIED)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(_DENIED)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _deny


@pytest.fixture
def denying_endpoint() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 answering 403 AccessDenied; yields its URL and the requests seen."""
    seen: list[str] = []
    handler = type("Handler", (_DenyAll,), {"requests": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_access_denied_on_rank_zero_is_raised_on_every_rank(
    denying_endpoint: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, seen = denying_endpoint
    launch(
        check_resume_failure_main,
        WORLD_SIZE,
        [str(tmp_path), "s3://locked-bucket/run/checkpoints"],
        # far below the 120 s collective timeout the ranks set: a rank left waiting would be killed
        timeout_s=90,
        env={**s3_environment(url), "PYTHONPATH": rank_pythonpath()},
    )

    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    assert all(r["permission"] for r in results), results
    assert len({r["message"] for r in results}) == 1  # the real error, the same everywhere
    assert "locked-bucket" in results[0]["message"]
    for rank, result in enumerate(results[1:], start=1):
        assert any("raised on global rank 0" in note for note in result["notes"]), (rank, result)
    assert all(request.startswith("GET /locked-bucket") for request in seen), seen  # only rank 0 listed
    assert len(seen) == 1, seen
