"""docs/architecture.md draws every module the packages have, and no module they do not."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"
MARKER = "<!-- modules:"
INDENT = 4  # each level of the tree picture is four columns further in


def drawn_modules(page: str) -> set[str]:
    """The module paths (``package/sub/module.py``) the tree picture after the marker draws."""
    picture = page[page.index(MARKER) :].split("```text\n", 1)[1].split("```", 1)[0]
    folders: list[str] = []
    modules = set()
    for line in picture.splitlines():
        match = re.search(r"[\w.]+/?", line)
        assert match is not None, f"a picture line without a name: {line!r}"
        depth = match.start() // INDENT
        name = match.group()
        del folders[depth:]
        if name.endswith("/"):
            folders.append(name)
        else:
            assert name.endswith(".py"), f"neither a folder nor a module: {line!r}"
            modules.add("".join(folders) + name)
    return modules


def package_modules() -> set[str]:
    found = set()
    for source in ROOT.glob("packages/*/src"):
        for module in source.rglob("*.py"):
            if module.name != "__init__.py":
                found.add(str(module.relative_to(source)))
    return found


def test_the_picture_draws_exactly_the_modules_the_packages_have() -> None:
    drawn = drawn_modules(PAGE.read_text())
    actual = package_modules()
    assert sorted(actual - drawn) == [], "modules missing from docs/architecture.md"
    assert sorted(drawn - actual) == [], "docs/architecture.md draws modules that do not exist"


def test_the_parser_reads_nesting_from_the_indentation() -> None:
    page = (
        f"{MARKER} x -->\n```text\n"
        "pkg/           a package\n"
        "├── sub/       a sub-package\n"
        "│   └── a.py   in sub\n"
        "└── b.py       in pkg\n"
        "other/\n"
        "└── c.py\n```\n"
    )
    assert drawn_modules(page) == {"pkg/sub/a.py", "pkg/b.py", "other/c.py"}
