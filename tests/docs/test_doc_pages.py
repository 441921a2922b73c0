"""What a reader meets first: every page says what it gives, numbers lead the benchmark page, and every
```python block either runs in the test suite or says why not."""

from __future__ import annotations

import pathlib

import pytest

from support.doc_examples import blocks, layer

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").rglob("*.md"))
RUNNERS = {
    "checkpoint_io": ROOT / "tests/checkpoint_io/test_doc_examples.py",
    "nemo": ROOT / "tests/nemo/test_doc_examples.py",
}
MAX_NOT_RUN = 2


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_page_opens_with_what_you_get(page: pathlib.Path) -> None:
    paragraphs = page.read_text().split("\n\n")
    assert paragraphs[0].startswith("# "), "a page starts with its title"
    assert paragraphs[1].startswith("**What you get:**"), "then one line saying what the reader gets"


def test_the_benchmark_page_leads_with_the_ratios_and_plots_then_the_method() -> None:
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    method = text.index("## How it was measured")
    assert text.index("| peer | loopback 16 MiB save") < method
    assert text.index("![bench-throughput-loopback]") < text.index("### loopback, 16 MiB state dict")
    assert text.index("![bench-throughput-loopback]") < method


def test_every_python_block_runs_or_says_why_not() -> None:
    found = blocks()
    skipped = [b for b in found if b.not_run is not None]
    assert all(b.not_run for b in skipped), "a not-run mark needs a reason"
    assert len(skipped) <= MAX_NOT_RUN, [b.name for b in skipped]
    for block in found:
        if block.not_run is None:
            assert RUNNERS[layer(block)].exists(), f"{block.name} has no test that runs it"
    assert {layer(b) for b in found if b.not_run is None} == set(RUNNERS)
