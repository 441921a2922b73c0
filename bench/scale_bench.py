"""The scale benchmark: ``./bench/run --scale``, many gloo CPU ranks against S3's request limits.

SeaweedFS behind the request-rate emulator (``rate_emulator.py``: S3's per-prefix limits scaled down,
10 PUT/s and 20 GET/s by default), then for each rank count (8, 16, 32) one job of ours and one of
s3torchconnector (``runners/scale_runner.py``): sharded save and load (ours with the flat and the
rank-hash layouts), and a single-file DDP resume that every rank loads. Each phase gets the
emulator's counts of its own: requests sent, SlowDown received, GET body bytes. Writes
bench/results/scale-latest.md and .json, with the paper model (``scale_model.py``) at the end.
Measurements only: nothing here asserts speed.
"""

from __future__ import annotations

import logging
import pathlib
import subprocess
import time
from typing import Any

import harness
import rate_emulator
import server

log = logging.getLogger("bench.scale")

BENCH = pathlib.Path(__file__).resolve().parent
SCALE_PEER_VENVS = {"ours": "ours", "s3torch": "s3torch"}
PEER_LAYOUTS = {"ours": ("flat", "rank-hash"), "s3torch": ("flat",)}  # s3torchconnector has one layout
COMPARED = (  # the phases both peers run, ours against s3torchconnector's
    ("dcp-flat", "save"),
    ("dcp-flat", "load"),
    ("dcp-replicated", "save"),
    ("dcp-replicated", "load"),
    ("resume", "load"),
)
PHASE_CLASS = {"save": "PUT", "load": "GET"}  # the request class a phase is bounded by
REFUSED_TARGET = 0.15  # at most this share of the requests a save needs may be refused
BOUND_TARGET = 1.3  # a save within this multiple of its request-rate lower bound
RUNNER_TIMEOUT_S = 1200
MiB = 1 << 20


def run(args: Any) -> int:
    """Every peer at every rank count of ``args.scale_ranks`` through one emulator; write the report.

    Args:
        args: run.py's parsed flags (``scale_ranks``, ``scale_size``, ``scale_resume_size``,
            ``scale_put_per_s``, ``scale_get_per_s``, ``scale_split_after_s``, ``scale_chunk_MB``,
            ``scale_sharded_only``, ``scale_unpaced``,
            ``out``).

    Returns:
        The exit code.
    """
    started = time.time()
    pythons, skipped = harness.peer_pythons(SCALE_PEER_VENVS.values(), args.out / "logs")
    peers = [p for p in SCALE_PEER_VENVS if SCALE_PEER_VENVS[p] in pythons]
    if "ours" not in pythons:
        log.error("the ours venv is needed to run the emulator; skipped: %s", skipped)
        return 1
    results: list[dict[str, Any]] = []
    with (
        harness.local_s3("s3ckpt-scale-bench-") as s3,
        rate_emulator.emulator_proxy(
            pythons["ours"],
            s3.server.endpoint_url,
            args.scale_put_per_s,
            args.scale_get_per_s,
            s3.workdir,
            split_after_s=args.scale_split_after_s,
        ) as proxy_url,
    ):
        env = s3.runner_env(proxy_url)
        for ranks in args.scale_ranks:
            for peer in peers:
                port = server.free_port()  # not a fixed one: another benchmark may share the host
                cfg = {
                    "peer": peer,
                    "ranks": ranks,
                    "size_bytes": args.scale_size,
                    "resume_bytes": args.scale_resume_size,
                    "replicated_bytes": args.scale_replicated_size,
                    "layouts": list(PEER_LAYOUTS[peer]),
                    "bucket": harness.bucket_name(f"scale-{peer}"),
                    "chunk_size_MB": args.scale_chunk_MB,
                    "write_concurrency": 10,
                    "read_concurrency": 15,
                    "dist_port": port,
                    "rates_url": proxy_url,
                    # the emulator's rates, which ours paces to (s3torchconnector takes no such setting);
                    # unpaced: ours is left with S3's own, which never bind here
                    "put_per_s": None if args.scale_unpaced else args.scale_put_per_s,
                    "get_per_s": None if args.scale_unpaced else args.scale_get_per_s,
                    "resume": not args.scale_sharded_only,
                    "timeout_s": RUNNER_TIMEOUT_S,
                    "tag": f"scale-{ranks}r-{peer}",
                }
                log.info("scale: %s on %d ranks", peer, ranks)
                t0 = time.perf_counter()
                result = s3.run_job(
                    pythons[SCALE_PEER_VENVS[peer]], "scale_runner.py", cfg, env, RUNNER_TIMEOUT_S
                )
                log.info("  %s on %d ranks took %.0f s", peer, ranks, time.perf_counter() - t0)
                if "error" in result:
                    log.warning("  failed: %s", result["error"].strip().splitlines()[-1][:300])
                results.append(result)
    meta = harness.run_metadata(
        started,
        skipped,
        ranks=list(args.scale_ranks),
        sharded_size=harness.size_label(args.scale_size),
        resume_size=harness.size_label(args.scale_resume_size),
        replicated_size=harness.size_label(args.scale_replicated_size),
        chunk_size_MB=args.scale_chunk_MB,
        put_per_s=args.scale_put_per_s,
        get_per_s=args.scale_get_per_s,
        split_after_s=args.scale_split_after_s,
        ours_paced_to_emulator=not args.scale_unpaced,
    )
    document = report(results, meta) + "\n" + paper_model(pythons["ours"])
    harness.write_results(args.out, "scale-", meta, results, document)
    print(document)
    return 0


# ---------------------------------------------------------------- figures


def phase_figures(phase: dict[str, Any]) -> dict[str, Any]:
    """One phase's figures from the emulator's counts of it.

    ``needed`` is what the phase would have sent with none refused (the requests of its class sent,
    less those refused); ``bound_s`` the least time the emulator's token bucket lets that many
    through one partition: ``(needed - burst) / rate``, of the phase's class (PUT for a save, GET
    for a load). Every request of a flat layout shares one partition; the rank-hash layout's shard
    objects lie under other prefixes, which the emulator (without ``split_after_s``) serves as
    partitions of their own, so its time can beat this bound.
    """
    stats = phase["stats"]
    rate_class = PHASE_CLASS[phase["phase"]]
    counts = stats["classes"][rate_class]
    needed = counts["admitted"]
    rate = stats["rates"]["put_per_s" if rate_class == "PUT" else "get_per_s"]
    burst = max(1.0, rate * stats["rates"]["burst_s"])
    bound_s = max(needed - burst, 0.0) / rate
    return {
        "seconds": phase["seconds"],
        "sent": sum(stats["requests"].values()),
        "class_sent": counts["admitted"] + counts["throttled"],
        "slowdown": sum(stats["throttled"].values()),
        "refused": counts["throttled"],
        "needed": needed,
        "bound_s": bound_s,
        "vs_bound": phase["seconds"] / bound_s if bound_s > 0 else None,
        "refused_share": counts["throttled"] / needed if needed else 0.0,
        "get_MiB": stats["get_body_bytes"] / MiB,
        "loadavg": phase.get("loadavg"),
    }


def _phases(results: list[dict[str, Any]]) -> dict[tuple[int, str, str, str], dict[str, Any]]:
    """(ranks, peer, case, phase) -> figures, for every job that ran."""
    table = {}
    for result in results:
        for phase in result.get("phases", []):
            key = (result["ranks"], result["peer"], phase["case"], phase["phase"])
            table[key] = {**phase_figures(phase), "how": phase.get("how")}
    return table


def report(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The Markdown report: figures per phase, then the targets, one line each, met or not."""
    table = _phases(results)
    lines = [
        "# Scale benchmark: many ranks against S3's request limits",
        "",
        f"- date: {meta['date']}; whole run {meta['elapsed_s'] / 60:.1f} min",
        f"- machine: {meta['machine']}",
        f"- S3 server: {meta['server']}, behind the request-rate emulator "
        f"(tests/support/request_rates.py) at {meta['put_per_s']:g} PUT/s and {meta['get_per_s']:g} GET/s "
        "per prefix partition, burst 1 s, "
        + (
            f"prefixes split after {meta['split_after_s']:g} s busy"
            if meta["split_after_s"]
            else "every prefix its own partition"
        ),
        f"- ours: {meta['ours']}"
        + (
            ", told the emulator's per-prefix rates (S3ClientConfig), which its writer paces to"
            if meta.get("ours_paced_to_emulator")
            else ", not told the emulator's rates (paces to S3's own, which never bind here)"
        ),
        f"- sharded state {meta['sharded_size']} in all (split over the ranks), ours in "
        f"{meta['chunk_size_MB']} MiB parts (s3torchconnector: its default); dcp-replicated adds "
        f"{meta['replicated_size']} of items every rank holds alike; single-file resume "
        f"{meta['resume_size']}, loaded by every rank (one node)",
        "",
        "| ranks | peer | case | phase | time s | requests sent | SlowDown | needed | bound s | time / bound "
        "| refused / needed | MiB fetched | host load |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (ranks, peer, case, phase), fig in table.items():
        vs_bound = f"{fig['vs_bound']:.2f}x" if fig["vs_bound"] else "n/a"
        how = f" ({fig['how']})" if fig["how"] else ""
        lines.append(
            f"| {ranks} | {peer} | {case}{how} | {phase} | {fig['seconds']:.2f} | {fig['sent']} "
            f"| {fig['slowdown']} | {fig['needed']} | {fig['bound_s']:.2f} | {vs_bound} "
            f"| {100 * fig['refused_share']:.0f}% | {fig['get_MiB']:.0f} | {fig['loadavg']:.1f} |"
        )
    lines += ["", "## Targets", "", *targets(table, results), ""]
    failures = [r for r in results if "error" in r]
    if failures or meta.get("skipped_venvs"):
        lines += ["## Failures", ""]
        lines += [f"- venv {name}: {why}" for name, why in meta.get("skipped_venvs", {}).items()]
        lines += [f"- {r['peer']} on {r['ranks']} ranks: {_last_line(r['error'])}" for r in failures]
        lines.append("")
    lines += [
        "Columns: time from a barrier before the phase to one after it, on rank 0 (save: until "
        "durable and committed; load: until every rank holds its tensors). Requests, SlowDown and bytes "
        "are the emulator's counts of that phase alone (reset before it). needed = the phase's "
        "class (PUT for a save, GET for a load) sent less refused; bound = (needed - burst) / rate "
        "of one partition; MiB fetched = GetObject body bytes; host load = the 1-minute load average "
        "before the phase (2 cores: above about 3, other work on the host slows the phase down).",
        "",
    ]
    return "\n".join(lines)


def targets(
    table: dict[tuple[int, str, str, str], dict[str, Any]], results: list[dict[str, Any]]
) -> list[str]:
    """One line per target and rank count: the figure, the target, met or not."""
    lines = []
    resume_mib = {r["ranks"]: r["resume_bytes"] / MiB for r in results}
    replicated_mib = {r["ranks"]: r.get("replicated_bytes", 0) / MiB for r in results}
    for ranks in sorted({key[0] for key in table}):
        for case in ("dcp-flat", "dcp-rank-hash"):
            fig = table.get((ranks, "ours", case, "save"))
            if fig is None:
                continue
            refused_ok = fig["refused_share"] <= REFUSED_TARGET
            bound_ok = fig["vs_bound"] is None or fig["vs_bound"] <= BOUND_TARGET
            lines.append(
                f"- {ranks} ranks, ours {case} save: refused {100 * fig['refused_share']:.0f}% of needed "
                f"(target <= {100 * REFUSED_TARGET:.0f}%: {_met(refused_ok)}); time "
                + (f"{fig['vs_bound']:.2f}x" if fig["vs_bound"] else "n/a")
                + f" the bound (target <= {BOUND_TARGET}x: {_met(bound_ok)})"
            )
        for case, phase in COMPARED:
            ours = table.get((ranks, "ours", case, phase))
            theirs = table.get((ranks, "s3torch", case, phase))
            if ours and theirs:
                no_slower = _met(ours["seconds"] <= theirs["seconds"])
                lines.append(
                    f"- {ranks} ranks, {case} {phase}: ours {ours['seconds']:.2f} s vs "
                    f"s3torchconnector {theirs['seconds']:.2f} s (target: no slower: {no_slower})"
                )
        for peer in ("ours", "s3torch"):
            fig, flat = (
                table.get((ranks, peer, "dcp-replicated", "load")),
                table.get((ranks, peer, "dcp-flat", "load")),
            )
            if fig and flat and replicated_mib[ranks]:
                reads = (fig["get_MiB"] - flat["get_MiB"]) / replicated_mib[ranks]
                lines.append(
                    f"- {ranks} ranks, sharded load with replicated items, {peer}: the replicated items "
                    f"fetched {reads:.1f}x (once per node would be 1x: {_met(reads <= 1.05)})"
                )
        for peer in ("ours", "s3torch"):
            fig = table.get((ranks, peer, "resume", "load"))
            if fig:
                fetches = fig["get_MiB"] / resume_mib[ranks]
                once = _met(fetches <= 1.05)
                lines.append(
                    f"- {ranks} ranks, single-file resume, {peer} ({fig['how']}): fetched {fetches:.1f}x the "
                    f"checkpoint from S3 in {fig['seconds']:.2f} s (target: once per node, 1x: {once})"
                )
    return lines


def paper_model(python: pathlib.Path) -> str:
    """``scale_model.py``'s Markdown, run by ``python`` (it imports our packages)."""
    proc = subprocess.run(
        [str(python), str(BENCH / "scale_model.py")], capture_output=True, text=True, check=False, timeout=120
    )
    return proc.stdout if proc.returncode == 0 else f"(scale_model.py failed: {_last_line(proc.stderr)})\n"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1][:300] if text.strip() else "?"
