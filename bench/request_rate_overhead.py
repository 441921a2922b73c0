"""The limiter's cost per request where it does not bind: ``python bench/request_rate_overhead.py``.

One ``RequestRateLimiter.acquire`` and ``succeeded`` (what every rated ``Requester.call`` attempt
adds) on a shared ``/dev/shm`` table, for a prefix that is not limited and for one paced to a share
far above what the loop sends (the path a save at S3's real rates takes: the bucket is refilled and a
token taken, nothing waits). Prints microseconds per request, best of a few rounds (docs/tuning.md).
"""

from __future__ import annotations

import time

from s3_utils.rate_table import open_shared_table
from s3_utils.request_rate import RequestRateLimiter

ROUNDS, CALLS = 5, 20_000


def per_call_us(limiter: RequestRateLimiter, prefix: str) -> float:
    """The best round's microseconds per acquire + succeeded on ``prefix``."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(CALLS):
            limiter.succeeded(limiter.acquire(prefix, "PUT"))
        best = min(best, (time.perf_counter() - started) / CALLS)
    return best * 1e6


def main() -> None:
    table = open_shared_table()
    limiter = RequestRateLimiter(table)
    limiter.share("bench/paced/", "PUT", 1e9)  # a share the loop never reaches
    print(f"table: {table.path or 'this process only'}")
    print(f"not limited: {per_call_us(limiter, 'bench/free/'):.1f} us per request")
    print(f"paced to a share it stays under: {per_call_us(limiter, 'bench/paced/'):.1f} us per request")
    limiter.release("bench/paced/", "PUT")


if __name__ == "__main__":
    main()
