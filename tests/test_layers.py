"""The layers point one way: views/worker -> ui/services -> db/models -> domain/settings, and nothing cycles.

Inside models/ the packages are layers too: data <- nets <- inference <- evaluation <- training <- the command line.
scripts/ sit on top and may use any layer, but nothing of tests/ (tests may use scripts/).
"""

import ast
from collections import defaultdict
from pathlib import Path

from settings import ROOT

PACKAGES = ("views", "ui", "worker", "services", "db", "models", "scripts", "tests")
# What each layer may import from the project (beside itself, domain and settings).
ALLOWED = {
    "domain": set(),
    "settings": set(),
    "models": set(),
    "db": set(),
    "services": {"db", "models"},
    "worker": {"services", "db", "models"},
    "ui": {"services", "db", "models", "worker"},
    "views": {"ui", "services", "db", "models", "worker"},
    "Home": {"ui", "services", "db", "models", "worker"},
    "scripts": {"ui", "services", "db", "models", "worker"},
    "tests": {"views", "ui", "services", "db", "models", "worker", "scripts", "Home"},
}
# Inside models/: what each package may import of the others. The command line (models.cli, models.__main__) may
# import them all.
MODELS_ALLOWED = {
    "data": set(),
    "nets": {"data"},
    "inference": {"data", "nets"},
    "evaluation": {"data", "nets", "inference"},
    "training": {"data", "nets", "inference", "evaluation"},
    "cli": {"data", "nets", "inference", "evaluation", "training"},
    "__main__": {"cli"},
}


def _modules() -> dict[str, Path]:
    found = {"domain": ROOT / "domain.py", "settings": ROOT / "settings.py", "Home": ROOT / "Home.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(p for p in parts if p != "__init__") or package] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module a file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for module, imported in _graph().items():
        layer = module.split(".")[0]
        for target in imported:
            target_layer = target.split(".")[0]
            if target_layer not in (layer, "domain", "settings") and target_layer not in ALLOWED[layer]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_module_imports_itself_through_others() -> None:
    graph = _graph()
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the current path, 2 done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state[nxt] == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif state[nxt] == 0:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    assert cycles == []


def test_each_package_of_models_imports_only_the_packages_below_it() -> None:
    wrong = []
    for module, imported in _graph().items():
        parts = module.split(".")
        if parts[0] != "models" or len(parts) < 2:
            continue
        for target in imported:
            target_parts = target.split(".")
            if target_parts[0] != "models" or len(target_parts) < 2 or target_parts[1] == parts[1]:
                continue
            if target_parts[1] not in MODELS_ALLOWED[parts[1]]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_every_package_of_models_has_its_rule() -> None:
    found = {p.name for p in (ROOT / "models").iterdir() if (p / "__init__.py").is_file()}
    found |= {p.stem for p in (ROOT / "models").glob("*.py") if p.stem != "__init__"}
    assert found == set(MODELS_ALLOWED)
