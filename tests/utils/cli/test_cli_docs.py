"""docs/cli.md stays in step with the parser: every subcommand, option and exit code is documented."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from s3_utils.cli import build_parser, exit_codes

CLI_DOC = Path(__file__).resolve().parents[3] / "docs" / "cli.md"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_subcommand_and_option_is_in_the_cli_page(name: str) -> None:
    text = CLI_DOC.read_text()
    assert f"\n## {name}\n" in text
    section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
    for action in subcommands()[name]._actions:
        for option in action.option_strings:
            if option in ("-h", "--help"):
                continue
            assert option in section, f"{option} of `s3ckpt {name}` is not documented in docs/cli.md"


def test_global_options_are_in_the_cli_page() -> None:
    text = CLI_DOC.read_text()
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and option not in ("--help", "--version"):
                assert option in text, option


def test_the_exit_code_table_matches_the_constants() -> None:
    table = dict(re.findall(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|$", CLI_DOC.read_text(), re.MULTILINE))
    constants = {
        getattr(exit_codes, name) for name in dir(exit_codes) if name.isupper() and not name.startswith("_")
    }
    assert {int(code) for code in table} == constants
