"""Copy the latest run into docs/benchmarks.md (between its results markers) and docs/img/bench-*.png.

    python3.11 bench/publish.py          # after ./bench/run
    python3.11 bench/publish.py --scale  # after ./bench/run --scale: its figures into docs/tuning.md

The hand-written parts of docs/benchmarks.md (method, caveats, discussion) are left as they are.
"""

from __future__ import annotations

import pathlib
import shutil
import sys

BENCH = pathlib.Path(__file__).resolve().parent
DOC = BENCH.parent / "docs" / "benchmarks.md"
IMG = BENCH.parent / "docs" / "img"
START, END = "<!-- results:start -->", "<!-- results:end -->"
SCALE_DOC = BENCH.parent / "docs" / "tuning.md"
SCALE_START, SCALE_END = "<!-- scale-results:start -->", "<!-- scale-results:end -->"
SCALE_MODEL_HEADING = "## Scale model on paper"  # tuning.md places and explains the model itself


def publish_scale() -> int:
    """The measured part of ``scale-latest.md`` (its table, targets and column notes, not the paper
    model) into docs/tuning.md, between the scale-results markers."""
    latest = (BENCH / "results" / "scale-latest.md").read_text()
    body = latest.split("\n", 1)[1].split(SCALE_MODEL_HEADING, 1)[0].replace("\n## ", "\n#### ")
    text = SCALE_DOC.read_text()
    if SCALE_START not in text or SCALE_END not in text:
        print(f"{SCALE_DOC} lacks the {SCALE_START} / {SCALE_END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(SCALE_START, 1)
    SCALE_DOC.write_text(f"{head}{SCALE_START}\n{body.strip()}\n{SCALE_END}{rest.split(SCALE_END, 1)[1]}")
    print(f"updated {SCALE_DOC}")
    return 0


def main() -> int:
    if sys.argv[1:] == ["--scale"]:
        return publish_scale()
    results = BENCH / "results"
    latest = (results / "latest.md").read_text()
    body = latest.split("\n", 1)[1].replace("\n## ", "\n### ")  # drop the title, nest the sections
    IMG.mkdir(parents=True, exist_ok=True)
    figures = []
    for png in sorted(results.glob("bench-*.png")):
        shutil.copyfile(png, IMG / png.name)
        figures.append(f"![{png.stem}](img/{png.name})")
    text = DOC.read_text()
    if START not in text or END not in text:
        print(f"{DOC} lacks the {START} / {END} markers; add them where the results go", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    # the ratio table (the first section) and the plots lead; the per-case tables follow
    first = body.find("\n### ", body.find("\n### ") + 1)
    ratios, cases = (body, "") if first < 0 else (body[:first], body[first:])
    plots = "\n\n".join(figures)
    DOC.write_text(f"{head}{START}\n{ratios.strip()}\n\n{plots}\n\n{cases.strip()}\n{END}{tail}")
    print(f"updated {DOC} and {len(figures)} plots in {IMG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
