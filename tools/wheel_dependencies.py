"""Does a wheel declare what it imports, and what its layer needs? Used by the nox ``wheels`` session.

Standard library only: nox imports it, and the probe below runs inside a bare venv.

    problems = dependency_problems(
        "s3-utils",
        imports=imported_modules(Path("packages/s3-utils/src")),
        declared=declared_dependencies(wheel_metadata(wheel)),
        own_modules=wheel_top_level(wheel),
        providers=venv["providers"],  # from PROBE, run by the venv's python where the wheel is installed
        installed=venv["installed"],
    )
"""

from __future__ import annotations

import ast
import re
import sys
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LayerRule:
    """What one wheel's layer needs and must not have.

    Attributes:
        requires: distributions the wheel must declare (the layer it is built on).
        forbidden: distributions that must not be installed with it (a higher layer's stack).
        runtime_only: distributions declared though never imported: loaded by name at run time.
    """

    requires: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    runtime_only: tuple[str, ...] = ()


LAYERS: dict[str, LayerRule] = {
    "s3-dirpath-utils": LayerRule(forbidden=("boto3", "torch", "lightning", "nemo-toolkit")),
    "s3-utils": LayerRule(
        requires=("s3-dirpath-utils",),
        forbidden=("torch", "lightning", "pytorch-lightning", "nemo-toolkit"),
        # fsspec opens s3:// paths (Lightning's existence checks, NeMo's) through it by protocol name
        runtime_only=("s3fs",),
    ),
    "s3-checkpoint-io": LayerRule(requires=("s3-utils",), forbidden=("nemo-toolkit",)),
    "nemo-s3-integration": LayerRule(requires=("s3-checkpoint-io", "nemo-toolkit")),
}

# Run by a venv's python: which distributions provide each top-level module, and which are installed.
PROBE = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({'providers': m.packages_distributions(), "
    "'installed': sorted({d.metadata['Name'] for d in m.distributions()})}))"
)

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r";.*\bextra\s*==")


def normalize(name: str) -> str:
    """A distribution name in its canonical form (PEP 503): ``Typing_Extensions`` -> ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(source_root: Path) -> dict[str, str]:
    """The top-level modules that the ``.py`` files under ``source_root`` import at run time.

    Relative imports, ``__future__`` and imports under ``if TYPE_CHECKING:`` are left out.

    Args:
        source_root: a folder of Python sources (a package's ``src``).

    Returns:
        Each module name, with ``file:line`` of its first import (for messages).
    """
    found: dict[str, str] = {}
    for path in sorted(source_root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _runtime_imports(tree):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                top = (name or "").split(".")[0]
                if top and top != "__future__":
                    found.setdefault(top, f"{path}:{node.lineno}")
    return found


def _runtime_imports(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Absolute import statements in ``tree``, skipping ``if TYPE_CHECKING:`` bodies."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and node.level == 0):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def wheel_metadata(wheel: Path) -> str:
    """The text of the wheel's ``*.dist-info/METADATA``."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name).decode()


def wheel_top_level(wheel: Path) -> set[str]:
    """The top-level modules the wheel itself installs."""
    with zipfile.ZipFile(wheel) as archive:
        tops = {n.split("/")[0] for n in archive.namelist()}
    return {t.removesuffix(".py") for t in tops if not t.endswith((".dist-info", ".data"))}


def declared_dependencies(metadata: str) -> set[str]:
    """The normalized names of the ``Requires-Dist`` entries, leaving out those of optional extras."""
    declared = set()
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            requirement = line.split(":", 1)[1]
            match = _NAME.match(requirement)
            if match and not _EXTRA_MARKER.search(requirement):
                declared.add(normalize(match.group(1)))
    return declared


def dependency_problems(
    wheel: str,
    *,
    imports: Mapping[str, str],
    declared: Iterable[str],
    own_modules: Iterable[str],
    providers: Mapping[str, Sequence[str]],
    installed: Iterable[str],
    layers: Mapping[str, LayerRule] = LAYERS,
) -> list[str]:
    """Everything wrong with one wheel's dependencies; empty when it is right.

    Wrong is: a module its sources import that no declared dependency provides (or that nothing
    installed provides), a dependency its layer needs but it does not declare, a declared dependency it
    never imports (unless the layer lists it as run-time only), or a forbidden distribution installed
    with it.

    Args:
        wheel: the distribution name, a key of ``layers``.
        imports: top-level modules its sources import, with where (see :func:`imported_modules`).
        declared: the distributions it declares (see :func:`declared_dependencies`).
        own_modules: the top-level modules the wheel installs itself.
        providers: top-level module -> distributions that install it, in the venv where the wheel is
            installed (``importlib.metadata.packages_distributions()``).
        installed: every distribution installed in that venv.
        layers: the rule of each wheel's layer.

    Returns:
        One message per problem, naming the module, the distribution and what to change.

    Raises:
        KeyError: if ``layers`` has no rule for ``wheel``.
    """
    rule = layers[wheel]
    declared_names = {normalize(d) for d in declared}
    own = set(own_modules)
    problems = []
    used: set[str] = set()
    for module, where in sorted(imports.items()):
        if module in own or module in sys.stdlib_module_names:
            continue
        provided_by = sorted({normalize(d) for d in providers.get(module, ())})
        if not provided_by:
            problems.append(
                f"{wheel} imports {module} ({where}), which no installed distribution provides: "
                f"add the distribution that provides it to the [project] dependencies of {wheel}"
            )
        elif declared_names.isdisjoint(provided_by):
            problems.append(
                f"{wheel} imports {module} ({where}) but does not declare {' or '.join(provided_by)}, "
                f"which provides it: add it to the [project] dependencies of {wheel}"
            )
        used.update(provided_by)
    problems += [
        f"{wheel} must declare {needed}, the layer it is built on"
        for needed in rule.requires
        if normalize(needed) not in declared_names
    ]
    allowed_unused = {normalize(d) for d in (*rule.requires, *rule.runtime_only)}
    problems += [
        f"{wheel} declares {name} but never imports it: remove it from its [project] dependencies, "
        f"or list it in LayerRule.runtime_only (tools/wheel_dependencies.py) with the reason"
        for name in sorted(declared_names - used - allowed_unused)
    ]
    pulled = sorted({normalize(d) for d in installed} & {normalize(d) for d in rule.forbidden})
    problems += [f"{wheel} pulled in {name}, which its layer must not depend on" for name in pulled]
    return problems
