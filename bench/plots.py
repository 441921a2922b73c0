"""PNG plots of a benchmark run (matplotlib, headless)."""

from __future__ import annotations

import pathlib
from typing import Any

import report
from harness import size_text


def draw(results: list[dict[str, Any]], out: pathlib.Path) -> list[pathlib.Path]:
    """Throughput bars per network pass, and the concurrency sweep; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[pathlib.Path] = []
    plain = [r for r in results if not r.get("sweep_concurrency")]
    for network in dict.fromkeys(r["network"] for r in plain):
        rows = [r for r in plain if r["network"] == network]
        sizes = sorted({r["size_bytes"] for r in rows})
        peers = list(dict.fromkeys(r["peer"] for r in rows))
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=False)
        width = 0.8 / max(len(sizes), 1)
        for ax, key, title in zip(axes, ("save_MiBps", "load_MiBps"), ("save", "load"), strict=True):
            for i, size in enumerate(sizes):
                values = []
                for peer in peers:
                    match = next((r for r in rows if r["peer"] == peer and r["size_bytes"] == size), None)
                    fig_ = report.figures(match) if match else None
                    values.append(fig_[key] if fig_ else 0.0)
                ax.bar([p + i * width for p in range(len(peers))], values, width, label=size_text(size))
            ax.set_xticks([p + width * (len(sizes) - 1) / 2 for p in range(len(peers))])
            ax.set_xticklabels(peers, rotation=35, ha="right", fontsize=8)
            ax.set_ylabel("MiB/s")
            ax.set_title(f"{title} throughput, {network}")
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"bench-throughput-{network.replace('+', 'plus')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    sweep = sorted((r for r in results if r.get("sweep_concurrency")), key=lambda r: r["sweep_concurrency"])
    good = [(r["sweep_concurrency"], report.figures(r)) for r in sweep]
    good = [(c, f) for c, f in good if f]
    if good:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        ax.plot([c for c, _ in good], [f["save_MiBps"] for _, f in good], "o-", label="save")
        ax.plot([c for c, _ in good], [f["load_MiBps"] for _, f in good], "s-", label="load")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent requests (read = write)")
        ax.set_ylabel("MiB/s")
        ax.set_title(
            f"ours-sync under {sweep[0]['network']} per request, {size_text(sweep[0]['size_bytes'])}"
        )
        ax.legend()
        fig.tight_layout()
        path = out / "bench-concurrency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
