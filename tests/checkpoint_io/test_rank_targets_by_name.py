"""support.ranks takes a target as a function and runs it in the child under the same module name."""

from __future__ import annotations

import functools
import pathlib
import sys
from typing import Any

import pytest

from checkpoint_io.rank_targets import all_reduce_rank_ids
from support.ranks import launch, spawn, target_name

CHILD_MODULE = """
def report(*args):
    print("ran " + __name__ + " with " + " ".join(args))
"""


def test_a_target_is_named_by_the_module_and_function_it_was_imported_as() -> None:
    assert target_name(all_reduce_rank_ids) == "checkpoint_io.rank_targets:all_reduce_rank_ids"


def test_a_test_module_is_imported_under_its_package_name() -> None:
    # what the children import by: a target defined here would be named checkpoint_io.<this module>
    assert __name__ == "checkpoint_io.test_rank_targets_by_name"


def test_a_function_a_fresh_interpreter_cannot_import_by_name_is_refused_before_anything_starts() -> None:
    def nested(out_dir: str) -> None:
        del out_dir

    for target in (nested, lambda: None, functools.partial(all_reduce_rank_ids, "unused")):
        with pytest.raises(ValueError, match="not a module-level function"):
            target_name(target)
    with pytest.raises(ValueError, match="not a module-level function"):
        launch(nested, world_size=2, args=["unused"], timeout_s=5)


def test_a_child_imports_its_target_from_the_folder_it_was_imported_from_here(
    tmp_path: pathlib.Path, monkeypatch: Any
) -> None:
    (tmp_path / "elsewhere_targets.py").write_text(CHILD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))  # a folder the child's own path does not have
    monkeypatch.delitem(sys.modules, "elsewhere_targets", raising=False)
    from elsewhere_targets import report  # type: ignore[import-not-found]

    try:
        child = spawn(report, ["a", "b"])
        output, _ = child.communicate(timeout=60)
    finally:
        sys.modules.pop("elsewhere_targets", None)
    assert child.returncode == 0, output.decode(errors="replace")
    assert output.decode() == "ran elsewhere_targets with a b\n"
