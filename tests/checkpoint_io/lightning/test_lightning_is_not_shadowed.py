"""This folder is named after s3_checkpoint_io.lightning; it must never stand in for the lightning package.

tests/checkpoint_io/ and its sub-folders are regular packages (they hold an ``__init__.py``), so pytest
imports this module as ``checkpoint_io.lightning.<name>`` with only ``tests/`` on the path, and
``import lightning`` still finds the installed Lightning.
"""

from __future__ import annotations

import pathlib

import lightning

TESTS_DIR = pathlib.Path(__file__).resolve().parents[2]


def test_import_lightning_gets_the_installed_package_not_this_folder() -> None:
    assert lightning.__file__ is not None
    assert TESTS_DIR not in pathlib.Path(lightning.__file__).resolve().parents
    assert hasattr(lightning, "Trainer")


def test_this_module_is_imported_under_its_package_name() -> None:
    assert __name__ == "checkpoint_io.lightning.test_lightning_is_not_shadowed"
