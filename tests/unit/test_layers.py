"""The import layers: each package imports only the packages below it, and no module import cycle exists.

Every `import`/`from` statement counts, lazy ones inside functions included: a lazy import runs just the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = {
    "adaptive_core": ROOT / "model_repository" / "adaptive_core",
    "adaptive_serving": ROOT / "model_repository" / "adaptive_serving",
    "adaptive_export": ROOT / "export" / "adaptive_export",
    "adaptive_ops": ROOT / "model_repository" / "adaptive_ops",
    "adaptive_client": ROOT / "client" / "adaptive_client",
    "adaptive_bench": ROOT / "client" / "adaptive_bench",
    "adaptive_profiling": ROOT / "profiling" / "adaptive_profiling",
}
# What each package may import besides itself. The stub models (model_repository/models) run inside Triton and may
# import only the core and the stub runtime.
ALLOWED = {
    "adaptive_core": set(),
    "adaptive_serving": {"adaptive_core"},
    "adaptive_export": {"adaptive_core", "adaptive_serving"},
    "adaptive_ops": {"adaptive_core", "adaptive_serving"},
    "adaptive_client": {"adaptive_core"},
    "adaptive_bench": {"adaptive_core", "adaptive_serving", "adaptive_export", "adaptive_ops", "adaptive_client"},
    "adaptive_profiling": {
        "adaptive_core",
        "adaptive_serving",
        "adaptive_export",
        "adaptive_ops",
        "adaptive_client",
        "adaptive_bench",
    },
    "models": {"adaptive_core", "adaptive_serving"},
}
# Third-party modules the core may import: it must load in any process, without Triton, torch or onnxruntime.
CORE_THIRD_PARTY = {"numpy"}


def _module_name(path: Path) -> str:
    for _package, folder in PACKAGE_DIRS.items():
        if folder in path.parents or path.parent == folder:
            rel = path.relative_to(folder.parent).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            return ".".join(parts)
    return "models." + path.parent.name  # model_repository/models/<name>/model.py


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved against `module`)."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def _sources() -> dict[str, Path]:
    files = [p for folder in PACKAGE_DIRS.values() for p in folder.rglob("*.py")]
    files += sorted((ROOT / "model_repository" / "models").glob("*/model.py"))
    return {_module_name(p): p for p in files}


def test_every_package_imports_only_lower_layers() -> None:
    violations = []
    for module, path in _sources().items():
        layer = module.split(".")[0]
        for name in _imports(path, module):
            top = name.split(".")[0]
            if top.startswith("adaptive_") and top != layer and top not in ALLOWED[layer]:
                violations.append(f"{path.relative_to(ROOT)} imports {name}")
            third_party = not top.startswith("adaptive_") and not _is_stdlib(top)
            if layer == "adaptive_core" and third_party and top not in CORE_THIRD_PARTY:
                violations.append(f"{path.relative_to(ROOT)} (core) imports {name}")
    assert not violations, "imports against the layer order:\n" + "\n".join(sorted(violations))


def _is_stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names or name == "__future__"


def test_no_import_cycle_between_modules() -> None:
    sources = _sources()
    graph = {m: {n for n in _imports(p, m) if n in sources and n != m} for m, p in sources.items()}
    # A package's __init__ is imported by its modules implicitly; only explicit edges count here.
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_project_import_resolves() -> None:
    # `from adaptive_x.y import z` needs the module adaptive_x.y; a moved module leaves imports that only fail at
    # run time (lazy ones) or in another process (the stubs).
    sources = _sources()
    missing = []
    for module, path in sources.items():
        for name in _imports(path, module):
            parent = name.rsplit(".", 1)[0]
            if name.startswith("adaptive_") and name not in sources and parent not in sources:
                missing.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(sorted(missing))


def test_the_layer_check_sees_every_package() -> None:
    # A package folder that moved would make the checks above pass on nothing.
    sources = _sources()
    for package in PACKAGE_DIRS:
        assert sum(m.split(".")[0] == package for m in sources) >= 2, f"no modules found for {package}"
    assert sum(m.startswith("models.") for m in sources) >= 4
