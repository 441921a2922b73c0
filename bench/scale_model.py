"""A model on paper of sharded saves and resumes at 1,000 and 16,000 ranks against S3's request limits.

    python bench/scale_model.py                  # the default model, as Markdown
    python bench/scale_model.py --ranks 1000,16000 --shard-size 1G --single-file-size 10G

No S3 here: the numbers follow from S3's limits (``s3_utils.limits``), how our writer splits an object
into parts (``s3_utils.part_sizes``), how the rank-hash layout spreads ranks over prefixes
(``s3_checkpoint_io.dcp._layout``), and the sizes and throughputs given. What it assumes:

- a save: every rank streams its shard (one object, planned parts) at once at ``--rank-MiBps``, so
  the save window is ``shard / rank-MiBps``; every rank's requests go to the prefix its layout names;
- S3 serves each partitioned prefix at its PUT (GET) rate; a prefix is partitioned on its own only
  after sustained load (a new prefix shares its parent's partition), so the rank-hash figures are
  those of a bucket S3 has already split, and the flat figures hold for every bucket;
- a resume: every rank needs the whole single-file checkpoint (DDP), or its own shard plus the items
  every rank holds alike (replicated items of a sharded checkpoint).

Needs ``s3_utils`` and ``s3_checkpoint_io`` importable (the bench's ``ours`` venv, or PYTHONPATH).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

from s3_checkpoint_io.dcp._layout import busiest_prefix_ranks
from s3_utils.config import TransferConfig
from s3_utils.download import chunk_ranges
from s3_utils.limits import GET_REQUESTS_PER_PREFIX_PER_S, PUT_REQUESTS_PER_PREFIX_PER_S, GiB, MiB, TiB
from s3_utils.part_sizes import planned_part_size

SIZE_UNITS = {"M": MiB, "G": GiB, "T": TiB}
DEFAULTS = TransferConfig()


@dataclass(frozen=True)
class Model:
    """The inputs of the model."""

    ranks: tuple[int, ...] = (1000, 16000)
    ranks_per_node: int = 8
    shard_size: int = GiB
    rank_MiBps: float = 400.0
    single_file_size: int = 10 * GiB
    replicated_size: int = GiB
    chunk_size: int = DEFAULTS.chunk_size
    concurrency: int = DEFAULTS.max_concurrency


def parts_of(size: int, model: Model) -> int:
    """Parts of one object of ``size`` bytes, as our writer plans its upload."""
    return math.ceil(size / planned_part_size(model.chunk_size, size, model.concurrency))


def ranged_gets_of(size: int, model: Model) -> int:
    """Ranged GETs that load one object of ``size`` bytes: one per chunk, as our download splits it."""
    return len(chunk_ranges(0, size, model.chunk_size))


def save_requests_per_rank(model: Model) -> int:
    """PUT-class requests one rank sends to save its shard: one PUT, or create + parts + complete."""
    parts = parts_of(model.shard_size, model)
    return 1 if parts == 1 else parts + 2


def save_rows(model: Model) -> list[str]:
    """Per rank count and layout: requests per second on the busiest prefix, against S3's rate."""
    window_s = model.shard_size / MiB / model.rank_MiBps
    per_rank_put = save_requests_per_rank(model)
    per_rank_get = ranged_gets_of(model.shard_size, model)
    rows = []
    for ranks in model.ranks:
        for layout in ("flat", "rank-hash"):
            busiest = busiest_prefix_ranks(ranks, layout)
            put_rate = busiest * per_rank_put / window_s
            get_rate = busiest * per_rank_get / window_s
            save_bound = max(window_s, busiest * per_rank_put / PUT_REQUESTS_PER_PREFIX_PER_S)
            load_bound = max(window_s, busiest * per_rank_get / GET_REQUESTS_PER_PREFIX_PER_S)
            rows.append(
                f"| {ranks:,} | {layout} | {busiest:,} | {ranks * per_rank_put:,} | {put_rate:,.0f} "
                f"| {put_rate / PUT_REQUESTS_PER_PREFIX_PER_S:.2f} | {save_bound:.1f} "
                f"| {get_rate:,.0f} | {get_rate / GET_REQUESTS_PER_PREFIX_PER_S:.2f} | {load_bound:.1f} |"
            )
    return rows


def resume_rows(model: Model) -> list[str]:
    """Per rank count: bytes and GETs one resume fetches from S3, read per rank or once per node."""
    rows = []
    for ranks in model.ranks:
        nodes = math.ceil(ranks / model.ranks_per_node)
        single_gets = ranged_gets_of(model.single_file_size, model) + 1  # + the HEAD
        sharded = ranks * model.shard_size
        for what, readers in (("every rank", ranks), ("once per node", nodes)):
            # one object, so one prefix: every reader's GETs share one partition's rate
            gets = readers * single_gets
            rows.append(
                f"| {ranks:,} | {what} | {_size(readers * model.single_file_size)} | {gets:,} "
                f"| {gets / GET_REQUESTS_PER_PREFIX_PER_S:.1f} "
                f"| {_size(sharded + readers * model.replicated_size)} |"
            )
        once_bound = single_gets / GET_REQUESTS_PER_PREFIX_PER_S
        rows.append(
            f"| {ranks:,} | once per job (+ broadcast) | {_size(model.single_file_size)} | {single_gets:,} "
            f"| {once_bound:.3f} | {_size(sharded + model.replicated_size)} |"
        )
    return rows


def report(model: Model) -> str:
    """The model as Markdown: its inputs, the save table and the resume table."""
    window_s = model.shard_size / MiB / model.rank_MiBps
    lines = [
        "## Scale model on paper",
        "",
        f"S3: {PUT_REQUESTS_PER_PREFIX_PER_S:,} PUT-class and {GET_REQUESTS_PER_PREFIX_PER_S:,} GET-class "
        f"requests/s per partitioned prefix. Each rank saves a {_size(model.shard_size)} shard at "
        f"{model.rank_MiBps:g} MiB/s (a {window_s:.2f} s window), in {parts_of(model.shard_size, model)} "
        f"parts of {_size(planned_part_size(model.chunk_size, model.shard_size, model.concurrency))} "
        f"({save_requests_per_rank(model)} PUT-class requests with create and complete). 'busiest prefix' "
        "is how many ranks write under the most crowded prefix (rank-hash: 256 prefixes from a hash of "
        "the rank). Bound: the least time S3's rate lets the busiest prefix finish in (never below the "
        "window).",
        "",
        "| ranks | layout | ranks on busiest prefix | PUT-class requests/save | PUT/s on it "
        "| x S3 PUT rate | save bound s | GET/s on it (load) | x S3 GET rate | load bound s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *save_rows(model),
        "",
        f"A resume: a single-file (DDP) checkpoint of {_size(model.single_file_size)} that every rank "
        f"needs, {model.ranks_per_node} ranks per node; a sharded checkpoint of "
        f"{_size(model.shard_size)} per rank with {_size(model.replicated_size)} of items every rank holds "
        "alike (replicated). GET bound: all readers of the one object share one partition's rate.",
        "",
        "| ranks | fetched by | single-file bytes from S3 | single-file GETs | GET bound s "
        "| sharded bytes from S3 |",
        "|---:|---|---:|---:|---:|---:|",
        *resume_rows(model),
    ]
    return "\n".join(lines) + "\n"


def _size(n: float) -> str:
    for unit, scale in (("PiB", TiB * 1024), ("TiB", TiB), ("GiB", GiB)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / MiB:,.0f} MiB"


def _parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in SIZE_UNITS and text[:-1].replace(".", "", 1).isdigit():
        return int(float(text[:-1]) * SIZE_UNITS[text[-1]])
    raise argparse.ArgumentTypeError(f"bad size {text!r}: use a number with M, G or T, e.g. 1G")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench/scale_model.py", description=__doc__.split("\n\n")[0])
    base = Model()
    parser.add_argument("--ranks", default=",".join(str(r) for r in base.ranks))
    parser.add_argument("--ranks-per-node", type=int, default=base.ranks_per_node)
    parser.add_argument("--shard-size", type=_parse_size, default=base.shard_size, help="per rank")
    parser.add_argument("--rank-MiBps", type=float, default=base.rank_MiBps, help="per-rank save throughput")
    parser.add_argument("--single-file-size", type=_parse_size, default=base.single_file_size)
    parser.add_argument("--replicated-size", type=_parse_size, default=base.replicated_size)
    args = parser.parse_args(argv)
    model = Model(
        ranks=tuple(int(r) for r in args.ranks.split(",")),
        ranks_per_node=args.ranks_per_node,
        shard_size=args.shard_size,
        rank_MiBps=args.rank_MiBps,
        single_file_size=args.single_file_size,
        replicated_size=args.replicated_size,
    )
    print(report(model), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
