"""One nox session per layer; each installs only its layer and those below it.

A layer that imports a higher layer, or a package it does not declare, fails its own session because
that package is simply not installed there.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile

import nox

sys.path.insert(0, str(pathlib.Path(__file__).parent / "tools"))
import wheel_dependencies

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True

ROOT = pathlib.Path(__file__).parent
CONSTRAINTS = ("-c", "constraints/test.txt")
# lightning 2.4 needs fsspec<2026, hence an older s3fs/aiobotocore/boto3 set
CONSTRAINTS_LIGHTNING24 = ("-c", "constraints/lightning24.txt")
TORCH = "torch==2.13.0"  # a CPU wheel on local disk here; any other version downloads GBs of CUDA
LIGHTNING_NEWEST = "2.6.6"
LIGHTNING_NEMO = "2.4.0"  # what nemo_toolkit 3.0.0's extras pin
NEMO_TOOLKIT = "3.0.0"

DIRPATH = "./packages/s3-dirpath-utils"
UTILS = "./packages/s3-utils"
CHECKPOINT_IO = "./packages/s3-checkpoint-io"
NEMO = "./packages/nemo-s3-integration"
PACKAGES = {
    "s3-dirpath-utils": DIRPATH,
    "s3-utils": UTILS,
    "s3-checkpoint-io": CHECKPOINT_IO,
    "nemo-s3-integration": NEMO,
}

TEST_DEPS = ("pytest", "pytest-timeout", "hypothesis", "psutil")
S3_TEST_DEPS = (*TEST_DEPS, "moto[server]")
# the other DCP tools the interop tests load our checkpoints with and theirs from (test-only; pinned in
# constraints/test.txt and constraints/lightning24.txt, both of which resolve with them and pass pip check)
INTEROP_TEST_DEPS = ("s3torchconnector[dcp,lightning]==1.5.0", "safetensors")

NO_LIGHTNING_TESTS = (
    "dcp",
    "convert",
    "engine",
    "test_rank_zero.py",
    "test_ranks_launcher.py",
    "test_rank_targets_by_name.py",
    "test_demo.py",  # the demo imports Lightning, but `./dev demo` always runs it on the newest
)
"""Parts of tests/checkpoint_io that import no Lightning: run on the newest Lightning only."""

nox.options.sessions = [
    "lint",
    "typecheck",
    "wheels",
    "dirpath",
    "utils",
    "checkpoint_io",
    "nemo",
    "docs",
    "summary",
]


def _pytest(session: nox.Session, folder: str, *extra: str) -> None:
    junit = ROOT / ".nox" / "junit" / f"{session.name}.xml"
    junit.unlink(missing_ok=True)
    junit.parent.mkdir(parents=True, exist_ok=True)
    session.run("pytest", folder, f"--junitxml={junit}", *extra, *session.posargs)


@nox.session(python="3.11")
def dirpath(session: nox.Session) -> None:
    """s3-dirpath-utils alone (no dependencies), 100% line and branch coverage."""
    session.install(*CONSTRAINTS, DIRPATH, *TEST_DEPS, "pytest-cov")
    _pytest(
        session,
        "tests/dirpath",
        "--cov=s3_dirpath_utils",
        "--cov-branch",
        "--cov-report=term-missing",
        "--cov-fail-under=100",
    )


@nox.session(python="3.11")
def utils(session: nox.Session) -> None:
    """s3-utils on s3-dirpath-utils, against moto's server over HTTP. No torch, no Lightning."""
    session.install(*CONSTRAINTS, DIRPATH, UTILS, *S3_TEST_DEPS)
    session.run("pip", "check")
    _pytest(session, "tests/utils")


@nox.session(python="3.11")
@nox.parametrize("lightning", [LIGHTNING_NEWEST, LIGHTNING_NEMO])
def checkpoint_io(session: nox.Session, lightning: str) -> None:
    """s3-checkpoint-io with a real Trainer, on the newest Lightning and on the one NeMo pins."""
    constraints = CONSTRAINTS if lightning == LIGHTNING_NEWEST else CONSTRAINTS_LIGHTNING24
    session.install(TORCH)
    session.install(
        *constraints,
        DIRPATH,
        UTILS,
        CHECKPOINT_IO,
        f"lightning=={lightning}",
        *S3_TEST_DEPS,
        *INTEROP_TEST_DEPS,
    )
    session.run("pip", "check")
    if lightning == LIGHTNING_NEWEST:
        _pytest(session, "tests/checkpoint_io")
    else:
        # The tests that import no Lightning (sharded DCP, conversion, the single-file engine, ranks)
        # run once, above; on the Lightning NeMo pins the rest, which is what differs between versions,
        # and keeps the suite within its 30 minutes on CI's 2 cores.
        ignored = (f"--ignore=tests/checkpoint_io/{part}" for part in NO_LIGHTNING_TESTS)
        _pytest(session, "tests/checkpoint_io", *ignored)


@nox.session(python="3.11")
def nemo(session: nox.Session) -> None:
    """nemo-s3-integration against the real nemo_toolkit 3.0.0 (and the Lightning 2.4.0 it pins)."""
    session.install(TORCH)
    session.install(
        "-c",
        "constraints/nemo.txt",
        DIRPATH,
        UTILS,
        CHECKPOINT_IO,
        NEMO,
        f"nemo_toolkit[lightning]=={NEMO_TOOLKIT}",
        "einops",
        "sentencepiece",
        "pandas",
        *S3_TEST_DEPS,
    )
    session.run("pip", "check")
    _pytest(session, "tests/nemo")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on every package's sources and the nox helpers in tools/."""
    session.install(TORCH)
    session.install(
        *CONSTRAINTS,
        DIRPATH,
        UTILS,
        CHECKPOINT_IO,
        f"lightning=={LIGHTNING_NEWEST}",
        "mypy==2.4.1",
        "boto3-stubs[s3]",
    )
    session.run("mypy", *sorted(str(p) for p in ROOT.glob("packages/*/src/*")), "tools")


@nox.session(python="3.11")
def wheels(session: nox.Session) -> None:
    """Build every wheel, install each alone into a fresh venv, and prove its dependencies and layering.

    Each wheel must declare a distribution for every module its sources import, and its layer's rule
    (tools/wheel_dependencies.py) must hold; tests/packaging shows that the check fails when it should.
    """
    session.install("hatch", *TEST_DEPS)
    _pytest(session, "tests/packaging")
    dist = ROOT / "dist"
    dist.mkdir(exist_ok=True)
    for old in dist.glob("*"):
        old.unlink()
    for path in PACKAGES.values():
        with session.chdir(path):
            session.run("hatch", "build", "-t", "wheel", str(dist.resolve()), silent=True)
    built = {w.name.split("-")[0].replace("_", "-"): w for w in dist.glob("*.whl")}
    session.log(f"built: {sorted(w.name for w in built.values())}")
    if set(built) != set(PACKAGES):
        session.error(f"expected one wheel per package {sorted(PACKAGES)}, got {sorted(built)}")

    for name in ("s3-dirpath-utils", "s3-utils", "s3-checkpoint-io"):
        module = name.replace("-", "_")
        with tempfile.TemporaryDirectory() as tmp:
            venv = pathlib.Path(tmp) / "venv"
            session.run("python", "-m", "venv", str(venv))
            pip, python = str(venv / "bin" / "pip"), str(venv / "bin" / "python")
            if name == "s3-checkpoint-io":
                session.run(pip, "install", "-q", TORCH, external=True)
            session.run(
                pip, "install", "-q", *CONSTRAINTS, "--find-links", str(dist), str(built[name]), external=True
            )
            _check_dependencies(session, python, name, built[name])
            session.run(python, "-c", f"import {module}; print({module}.__name__, 'ok')", external=True)
            session.run(pip, "check", external=True)
            if name == "s3-checkpoint-io":
                # nemo-s3-integration on top, without nemo_toolkit's own dependency tree (GBs, and the
                # nemo session installs and `pip check`s it whole): enough to map every import it makes.
                top = built["nemo-s3-integration"]
                session.run(
                    pip,
                    "install",
                    "-q",
                    "--no-deps",
                    f"nemo_toolkit=={NEMO_TOOLKIT}",
                    str(top),
                    external=True,
                )
                _check_dependencies(session, python, "nemo-s3-integration", top)


def _check_dependencies(session: nox.Session, python: str, name: str, wheel: pathlib.Path) -> None:
    """Fail the session unless ``wheel`` (installed for ``python``) declares all it imports."""
    venv = json.loads(str(session.run(python, "-c", wheel_dependencies.PROBE, external=True, silent=True)))
    problems = wheel_dependencies.dependency_problems(
        name,
        imports=wheel_dependencies.imported_modules(ROOT / PACKAGES[name] / "src"),
        declared=wheel_dependencies.declared_dependencies(wheel_dependencies.wheel_metadata(wheel)),
        own_modules=wheel_dependencies.wheel_top_level(wheel),
        providers=venv["providers"],
        installed=venv["installed"],
    )
    if problems:
        session.error("\n".join(problems))
    session.log(f"{name}: declares every distribution it imports, and its layer's rule holds")


DOCS_DEPS = (
    "mkdocs==1.6.1",
    "mkdocstrings==1.0.8",
    "mkdocstrings-python==2.0.11",
    "griffe==2.4.1",
    "mkdocs-autorefs==1.4.5",
    "mkdocs-material==9.8.2",  # the theme: search, copy buttons, admonitions, dark mode
    "ruff==0.17.6",  # mkdocstrings formats the API signatures with it
)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the docs site with mkdocs --strict (any warning fails); API reference from the docstrings."""
    session.install(*DOCS_DEPS, "pytest", "pytest-timeout")
    # mkdocs-material prints a banner about MkDocs 2 on every build unless told not to
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        str(ROOT / ".nox" / "site"),
        env={"NO_MKDOCS_2_WARNING": "1"},
    )
    _pytest(session, "tests/docs")


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """Train with async S3 checkpoints, SIGKILL, resume from S3 (`./dev demo -- --dirpath s3://b/p`)."""
    session.install(TORCH)
    session.install(
        *CONSTRAINTS, DIRPATH, UTILS, CHECKPOINT_IO, f"lightning=={LIGHTNING_NEWEST}", "moto[server]"
    )
    session.run("python", "demo/demo.py", *session.posargs)


@nox.session(venv_backend="none")
def summary(session: nox.Session) -> None:
    """One closing line over every pytest session this run: 'N passed, N failed'."""
    import xml.etree.ElementTree as ET

    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for report in sorted((ROOT / ".nox" / "junit").glob("*.xml")):
        for suite in ET.parse(report).getroot().iter("testsuite"):
            for key in totals:
                totals[key] += int(suite.get(key, 0))
    failed = totals["failures"] + totals["errors"]
    passed = totals["tests"] - failed - totals["skipped"]
    print(f"tests: {passed} passed, {failed} failed, {totals['skipped']} skipped")
    if failed:
        session.error(f"{failed} tests failed")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """The benchmark against every peer (not a default session): `nox -s bench -- --quick`."""
    session.run("python3.11", "bench/run.py", *session.posargs, external=True)
