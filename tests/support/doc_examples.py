"""The ```python blocks of the README and docs/, found so that the test suite can run every one of them.

A block that is not a program (a list of signatures, say) is marked by an HTML comment on the line
before its fence, which the rendered page does not show:

    <!-- not-run: a summary of signatures, not a program -->

Every other block is run by a test in the layer whose packages it imports (see :func:`layer`): the NeMo
ones in tests/nemo, the Lightning and Fabric ones in tests/checkpoint_io.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# (file, heading it starts from): the package README is ours only from its Fabric section on
SOURCES: tuple[tuple[str, str | None], ...] = (
    ("README.md", None),
    ("docs", None),
    ("packages/s3-checkpoint-io/README.md", "## Lightning Fabric"),
)
_FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.*?)\s*-->\s*\Z")
_BUCKET = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])")


@dataclass(frozen=True)
class Block:
    """One fenced python block: where it is, its code, and the reason it is not run (None: it runs)."""

    path: str
    line: int
    code: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def buckets(self) -> set[str]:
        """The buckets the block's ``s3://`` URLs name (a test creates them first)."""
        return set(_BUCKET.findall(self.code))

    def preceding_yaml(self) -> str | None:
        """The ```yaml block right before this one in its file (the config.yaml a block loads)."""
        text = (ROOT / self.path).read_text()
        before = "\n".join(text.splitlines()[: self.line - 1])
        found = re.findall(r"^```yaml\n(.*?)^```", before, re.MULTILINE | re.DOTALL)
        return found[-1] if found else None


def _files() -> list[tuple[Path, str | None]]:
    files: list[tuple[Path, str | None]] = []
    for name, heading in SOURCES:
        path = ROOT / name
        files += [(p, heading) for p in sorted(path.rglob("*.md"))] if path.is_dir() else [(path, heading)]
    return files


def blocks() -> list[Block]:
    """Every ```python block of the sources, in file order."""
    found: list[Block] = []
    for path, heading in _files():
        text = path.read_text()
        start = text.index(heading) if heading else 0
        for match in _FENCE.finditer(text, start):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            reason = _NOT_RUN.search(before)
            relative = str(path.relative_to(ROOT))
            found.append(Block(relative, line, match.group(1), reason.group(1) if reason else None))
    return found


def layer(block: Block) -> str:
    """The test layer that runs ``block``: "nemo" if it imports NeMo, else "checkpoint_io"."""
    imports_nemo = re.search(r"^\s*(from|import) (nemo|omegaconf)", block.code, re.MULTILINE)
    return "nemo" if imports_nemo else "checkpoint_io"


def runnable(layer_name: str) -> list[Block]:
    """The blocks ``layer_name``'s test runs."""
    return [b for b in blocks() if b.not_run is None and layer(b) == layer_name]
