"""The shape of the code, checked from its import statements (read, not run): no import cycle, each
component stands alone on the core, the core does not depend on its components, and no module
grows past what one reader holds in mind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the package it installs as (pyproject.toml's package-dir).
PACKAGES = {"ctloop": "ctloop", "components": "ctloop.components", "pipelines": "ctloop.pipelines",
            "bench": "bench", "realdata": "realdata"}
MAX_LINES = 450
# What runs or compiles the pipeline may import it: the CLI, the local runner, compiling, and the
# settings file (whose keys are the pipeline's parameters).
APPLICATION = ("ctloop.cli", "ctloop.local", "ctloop.kfp", "ctloop.config")


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if "tests" in parts:
                continue
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The project modules ``path`` imports, at any depth (imports inside functions included:
    components import in their bodies)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            # The longest project module the name is, or is inside of.
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name:
                targets.add(name)
    return targets


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}
# "from ctloop.x import y" where y is a module adds both ctloop.x and ctloop.x.y: a package's
# __init__ is not a dependency of its own submodules' importers.
for _name, _targets in GRAPH.items():
    _targets -= {t for t in set(_targets) if any(u.startswith(t + ".") for u in _targets)
                 and MODULES[t].name == "__init__.py"}


def _component(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if parts[:2] == ["ctloop", "components"] and len(parts) > 2 else None


def test_there_is_no_import_cycle():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.add(member)
                if member == node:
                    break
            if len(members) > 1:
                cycles.append(sorted(members))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_components_import_the_core_never_each_other():
    crossing = sorted(
        (module, target) for module, targets in GRAPH.items() if _component(module)
        for target in targets if _component(target) not in (None, _component(module)))
    assert not crossing, f"a component imports another component: {crossing}"


def test_the_core_does_not_depend_on_its_components_or_pipelines():
    core = [m for m in GRAPH if m.startswith("ctloop.") and not m.startswith(
        ("ctloop.components", "ctloop.pipelines", *APPLICATION))]
    assert "ctloop.registry" in core and "ctloop.contract" in core  # the check sees the core
    reaching = sorted((module, target) for module in core for target in GRAPH[module]
                      if target.startswith(("ctloop.components", "ctloop.pipelines")))
    assert not reaching, f"core modules import components or pipelines: {reaching}"


def test_only_the_pipeline_composes_components():
    composing = sorted(
        (module, target) for module, targets in GRAPH.items()
        if module.startswith("ctloop.") and not module.startswith(
            ("ctloop.components", "ctloop.pipelines"))
        for target in targets if target.startswith("ctloop.components"))
    assert not composing, f"modules that reach past the pipeline into components: {composing}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_stays_readable(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines < MAX_LINES, f"{MODULES[module].relative_to(ROOT)} has {lines} lines; split it"
