"""docs/reliability.md promises a test for every fault; each test it names must exist."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "reliability.md"
# `tests/a/b.py::test_x` names a file (and a test); a bare `::test_y` names a test in the file before it
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`")


def references() -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    current = None
    for match in REFERENCE.finditer(TABLE.read_text()):
        path, name = match.group(1), match.group(2)
        if path:
            current = path
        elif name and current:
            path = current
        else:
            continue
        found.append((path, name))
    return found


def test_the_table_names_many_tests() -> None:
    assert len([r for r in references() if r[1]]) >= 30


def test_every_test_the_reliability_table_names_exists() -> None:
    missing = []
    for path, name in references():
        source = ROOT / path
        if not source.is_file():
            missing.append(path)
        elif name and not re.search(rf"^def {name}\(", source.read_text(), re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert missing == [], f"docs/reliability.md names tests that do not exist: {missing}"
