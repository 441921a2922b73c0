"""The wheels session's dependency check fails on a package that imports what it does not declare."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from wheel_dependencies import (
    LayerRule,
    declared_dependencies,
    dependency_problems,
    imported_modules,
    wheel_top_level,
)

LAYERS = {
    "low": LayerRule(forbidden=("torch",)),
    "fake": LayerRule(requires=("low",), runtime_only=("s3fs",)),
}
PROVIDERS = {"yaml": ["PyYAML"], "low": ["low"], "boto3": ["boto3"], "botocore": ["botocore"]}


def write_package(root: Path, **modules: str) -> Path:
    package = root / "src" / "fake"
    package.mkdir(parents=True)
    for name, text in modules.items():
        (package / f"{name}.py").write_text(text)
    return root / "src"


def problems(src: Path, declared: set[str], installed: tuple[str, ...] = ()) -> list[str]:
    return dependency_problems(
        "fake",
        imports=imported_modules(src),
        declared=declared,
        own_modules={"fake"},
        providers=PROVIDERS,
        installed=installed,
        layers=LAYERS,
    )


def test_an_import_of_an_undeclared_distribution_is_named_with_where_and_what_to_add(tmp_path: Path) -> None:
    src = write_package(tmp_path, __init__="import low\n", codec="import os\n\nimport yaml.loader\n")

    (problem,) = problems(src, {"low"})

    assert "fake imports yaml" in problem
    assert f"{src / 'fake' / 'codec.py'}:3" in problem
    assert "does not declare pyyaml" in problem
    assert "add it to the [project] dependencies of fake" in problem


def test_an_import_that_nothing_installed_provides_is_named(tmp_path: Path) -> None:
    src = write_package(tmp_path, __init__="import low\nfrom higher_layer import thing\n")

    assert problems(src, {"low"}) == [
        f"fake imports higher_layer ({src / 'fake' / '__init__.py'}:2), which no installed distribution "
        "provides: add the distribution that provides it to the [project] dependencies of fake"
    ]


def test_stdlib_own_relative_future_and_type_checking_imports_need_no_declaration(tmp_path: Path) -> None:
    src = write_package(
        tmp_path,
        __init__="from __future__ import annotations\nimport low\nfrom . import util\nfrom fake import x\n",
        util=(
            "import json, typing\nfrom typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    import yaml\nif typing.TYPE_CHECKING:\n    from boto3 import client\n"
        ),
    )

    assert problems(src, {"low"}) == []


def test_a_wheel_that_does_not_declare_its_lower_layer_fails(tmp_path: Path) -> None:
    src = write_package(tmp_path, __init__="import yaml\n")

    assert problems(src, {"pyyaml"}) == ["fake must declare low, the layer it is built on"]


def test_a_declared_dependency_that_is_never_imported_fails_unless_run_time_only(tmp_path: Path) -> None:
    src = write_package(tmp_path, __init__="import low\nimport boto3\n")

    (problem,) = problems(src, {"low", "boto3", "s3fs", "pyyaml"})

    assert problem.startswith("fake declares pyyaml but never imports it")


def test_an_import_needs_its_own_distribution_declared_not_one_that_pulls_it_in(tmp_path: Path) -> None:
    src = write_package(tmp_path, __init__="import low\nimport boto3\nfrom botocore.config import Config\n")

    (problem,) = problems(src, {"low", "boto3"})

    assert "fake imports botocore" in problem
    assert "does not declare botocore" in problem


def test_a_forbidden_distribution_installed_with_the_wheel_fails(tmp_path: Path) -> None:
    src = write_package(tmp_path, __init__="import low\n")

    assert problems(src, {"low"}, installed=("low", "Torch")) == []
    low = dependency_problems(
        "low", imports={}, declared=(), own_modules=(), providers={}, installed=("Torch",), layers=LAYERS
    )
    assert low == ["low pulled in torch, which its layer must not depend on"]


def test_a_wheel_with_no_rule_is_refused() -> None:
    with pytest.raises(KeyError):
        dependency_problems(
            "unknown", imports={}, declared=(), own_modules=(), providers={}, installed=(), layers=LAYERS
        )


def test_requires_dist_names_are_normalized_and_optional_extras_left_out() -> None:
    metadata = "\n".join(
        [
            "Metadata-Version: 2.4",
            "Name: fake",
            "Requires-Dist: boto3[crt]>=1.36",
            "Requires-Dist: Typing_Extensions>=4.6",
            "Requires-Dist: nemo_toolkit>=3.0.0; python_version >= '3.10'",
            "Requires-Dist: pytest; extra == 'test'",
        ]
    )

    assert declared_dependencies(metadata) == {"boto3", "typing-extensions", "nemo-toolkit"}


def test_a_wheels_own_top_level_modules_are_read_from_the_archive(tmp_path: Path) -> None:
    wheel = tmp_path / "fake-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fake/__init__.py", "")
        archive.writestr("fake_helper.py", "")
        archive.writestr("fake-0.1.0.dist-info/METADATA", "Name: fake\n")

    assert wheel_top_level(wheel) == {"fake", "fake_helper"}
