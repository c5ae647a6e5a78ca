"""The import graph of the project: each package imports only the packages its entry in
:data:`ALLOWED` names, and no module imports itself back through others (read from the source
with ``ast``, nested imports included).
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from conftest import ROOT

#: package -> the project packages it may import. ``see`` is a leaf; the engine reads trees
#: from ``see`` only and touches no run folders; the core drives the engine and does not import
#: the detector (it loads a SPACE checkpoint by a module name string); the detector builds on
#: the core only.
ALLOWED: dict[str, set[str]] = {
    "see": set(),
    "gplearn_custom": {"see"},
    "diffses": {"see", "gplearn_custom"},
    "space": {"diffses"},
}


def imported_packages(path: Path) -> dict[str, int]:
    """The project packages ``path`` imports, each with the line of its first import."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            if top in ALLOWED:
                found.setdefault(top, node.lineno)
    return found


def module_name(path: Path) -> str:
    """``diffses/detection.py`` -> ``diffses.detection``; a package's ``__init__`` -> its name."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The project modules in ``modules`` that ``path`` imports; ``from pkg import mod`` counts
    as an import of the submodule ``pkg.mod``, not of ``pkg``'s ``__init__``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            subs = [f"{node.module}.{alias.name}" for alias in node.names]
            names = subs if all(sub in modules for sub in subs) else [node.module, *subs]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    files = package_files(package)
    assert files, f"no Python files under {package}/"
    bad = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        allowed = {package} | ALLOWED[package]
        bad += [f"{rel}:{line} imports {top}"
                for top, line in imported_packages(path).items() if top not in allowed]
    assert not bad, "\n".join(bad)


def test_no_module_imports_itself_back() -> None:
    """No import cycle between modules, inside a package or across packages (such as the
    detection API and the SPACE model it loads)."""
    paths = {module_name(path): path for package in ALLOWED for path in package_files(package)}
    graph = {name: imported_modules(path, set(paths)) - {name} for name, path in paths.items()}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")
