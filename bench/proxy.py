"""A small asyncio HTTP/1.1 proxy on 127.0.0.1 that holds every request for a fixed delay.

Run as its own process (so its CPU is not charged to any client):
``python bench/proxy.py --target 127.0.0.1:8333 --delay-ms 30 --port-file /tmp/port``.
It parses only request framing (headers, then Content-Length or chunked bodies) so that each request,
including each request on a kept-alive connection, waits ``delay_ms`` before it is forwarded; responses
stream back untouched. It stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pathlib
import signal

CHUNK = 1 << 20


async def _pipe_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int) -> None:
    while length > 0:
        data = await reader.read(min(CHUNK, length))
        if not data:
            raise ConnectionError("client closed mid-body")
        writer.write(data)
        await writer.drain()
        length -= len(data)


async def _pipe_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        size_line = await reader.readline()
        writer.write(size_line)
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, then the empty line
                line = await reader.readline()
                writer.write(line)
                if line in (b"\r\n", b"\n", b""):
                    break
            await writer.drain()
            return
        await _pipe_body(reader, writer, size + 2)  # data and its CRLF


async def _requests(client: asyncio.StreamReader, upstream: asyncio.StreamWriter, delay_s: float) -> None:
    while True:
        head = await client.readuntil(b"\r\n\r\n")
        await asyncio.sleep(delay_s)
        upstream.write(head)
        await upstream.drain()
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:] if b":" in line)
        }
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            await _pipe_chunked(client, upstream)
        else:
            await _pipe_body(client, upstream, int(headers.get(b"content-length", b"0")))


async def _responses(upstream: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
    while data := await upstream.read(CHUNK):
        client.write(data)
        await client.drain()


async def _serve_one(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, target: tuple[str, int], delay_s: float
) -> None:
    try:
        up_r, up_w = await asyncio.open_connection(*target, limit=CHUNK * 2)
    except OSError:
        client_w.close()
        return
    tasks = [
        asyncio.create_task(_requests(client_r, up_w, delay_s)),
        asyncio.create_task(_responses(up_r, client_w)),
    ]
    with contextlib.suppress(Exception):
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    for writer in (up_w, client_w):
        with contextlib.suppress(Exception):
            writer.close()


async def _main(target: tuple[str, int], delay_s: float, port_file: pathlib.Path) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve_one(r, w, target, delay_s), "127.0.0.1", 0, limit=CHUNK * 2
    )
    port = server.sockets[0].getsockname()[1]
    port_file.write_text(str(port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="host:port of the S3 server")
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--port-file", type=pathlib.Path, required=True)
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    asyncio.run(_main((host, int(port)), args.delay_ms / 1000.0, args.port_file))


if __name__ == "__main__":
    main()
