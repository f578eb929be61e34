"""The house stays as docs/architecture.md draws it: parts import only the parts below them,
no module of src/ravit reaches itself through imports, and deployment never loads the trainer.

The imports are read from the source (ast), function-level ones included, and names a
package exports lazily (`ravit._lazy.lazy_exports`) count as imports of the submodule that
defines them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ravit"

# Which part each module belongs to: the longest matching prefix wins.
PARTS = {
    "ravit": "package",
    "ravit.__main__": "cli",
    "ravit.cli": "cli",
    "ravit.reports": "reports",
    "ravit.search": "reports",
    "ravit.demo": "reports",
    "ravit.training": "training",
    "ravit.export": "export",
    "ravit.convert": "convert",
    "ravit.runtime": "runtime",
    "ravit.evaluation": "evaluation",
    "ravit.runs": "runs",
    "ravit.models": "models",
    "ravit.layers": "models",
    "ravit.data": "data",
    "ravit.exits": "exits",
    "ravit.cost": "cost",
    "ravit.config": "config",
    "ravit._lazy": "base",
    "ravit._version": "base",
    "ravit.errors": "base",
    "ravit.allocator": "base",
    "ravit.devices": "base",
}

# What each part may import (besides itself), as docs/architecture.md draws it.
BELOW_RUNS = {"models", "exits", "cost", "config", "base"}
MAY_IMPORT = {
    "base": set(),
    "config": {"base"},
    "cost": {"config", "base"},
    "exits": {"cost", "config", "base"},
    "data": {"config", "base"},
    "models": {"exits", "cost", "config", "base"},
    "runs": BELOW_RUNS,
    "evaluation": {"runs", "data"} | BELOW_RUNS,
    "training": {"evaluation", "runs", "data"} | BELOW_RUNS,
    "runtime": {"evaluation", "runs", "data"} | BELOW_RUNS,
    "export": {"runtime", "evaluation", "runs", "data"} | BELOW_RUNS,
    "convert": {"runs", "data"} | BELOW_RUNS,
    "reports": {"training", "runtime", "evaluation", "runs", "data"} | BELOW_RUNS,
    "package": {"runs", "models", "cost", "config", "base"},  # ravit/__init__: lazy exports
    "cli": set(PARTS.values()) - {"cli"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def part_of(module: str) -> str:
    best = max((k for k in PARTS if module == k or module.startswith(k + ".")), key=len)
    return PARTS[best]


def lazy_exports(tree: ast.Module) -> dict[str, str]:
    """name -> submodule (relative) of a package's `lazy_exports(__name__, {...})` call."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports":
            table = ast.literal_eval(node.args[1])
            found.update({name: sub for sub, names in table.items() for name in names})
    return found


TREES = {m: ast.parse(p.read_text(), str(p)) for m, p in MODULES.items()}
LAZY = {m: lazy_exports(t) for m, t in TREES.items() if MODULES[m].name == "__init__.py"}


def resolve(package: str, name: str) -> str:
    """The module `from package import name` loads: a submodule, a lazy export's module,
    or the package itself."""
    if f"{package}.{name}" in MODULES:
        return f"{package}.{name}"
    if name in LAZY.get(package, {}):
        return f"{package}.{LAZY[package][name]}"
    return package


def imports_of(module: str) -> set[str]:
    """Every ravit module that `module` imports, at any depth of its code."""
    out = set()
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "ravit"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ravit":
            out |= {resolve(node.module, a.name) for a in node.names}
    if module in LAZY:  # the package loads these on first use
        out |= {f"{module}.{sub}" for sub in LAZY[module].values()}
    return {m for m in out if m != module}


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_part_and_every_import_is_a_module():
    assert {m for m in MODULES if m not in GRAPH} == set()
    unknown = {(m, t) for m, targets in GRAPH.items() for t in targets if t not in MODULES}
    assert unknown == set(), f"imports of modules that do not exist: {sorted(unknown)}"
    assert all(part_of(m) in MAY_IMPORT for m in MODULES)


def test_parts_import_only_the_parts_below_them():
    wrong = sorted(
        f"{m} ({part_of(m)}) -> {t} ({part_of(t)})"
        for m, targets in GRAPH.items()
        for t in targets
        if part_of(t) != part_of(m) and part_of(t) not in MAY_IMPORT[part_of(m)]
    )
    assert wrong == [], "forbidden arrows:\n" + "\n".join(wrong)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components of more than one module, or with a self-loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert strongly_connected(GRAPH) == []


def test_the_circle_finder_finds_circles():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def call_name(node: ast.Call) -> str | None:
    """ "print" or "sys.exit" for print(...) and sys.exit(...)."""
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        return f"{f.value.id}.{f.attr}"
    return None


def test_only_the_cli_parses_argv_prints_and_exits():
    library_calls = sorted(
        f"{m}:{node.lineno} {call_name(node)}"
        for m, tree in TREES.items()
        if part_of(m) != "cli"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and call_name(node) in ("print", "sys.exit", "exit", "argparse.ArgumentParser")
    )
    assert library_calls == []


# -- deployment needs no trainer: checked in a fresh interpreter ---------------------------


def loaded_after(code: str) -> set[str]:
    script = textwrap.dedent(code) + "\nimport sys\nprint(' '.join(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
                          timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return set(done.stdout.strip().splitlines()[-1].split())  # the last line: the modules


def test_importing_the_deployment_modules_loads_no_trainer():
    loaded = loaded_after("""
        import ravit.runtime.prediction, ravit.runtime.streaming, ravit.runs
        import ravit.export.exporter, ravit.evaluation, ravit.cli
    """)
    assert "ravit.runtime.prediction" in loaded and "torch" in loaded
    assert sorted(m for m in loaded if m.startswith("ravit.training")) == []


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from ravit.config import resolve_config
    from ravit.training import fit

    run = tmp_path_factory.mktemp("arch") / "run"
    cfg = resolve_config(overrides=["model.preset=digits", "data.spec=digits", "train.epochs=1",
                                    "train.batch_size=64", "data.val_size=100"])  # fmt: skip
    fit(run, cfg)
    return run


def test_ravit_predict_runs_without_loading_the_trainer(tiny_run, tmp_path):
    from PIL import Image

    image = tmp_path / "digit.png"
    Image.new("L", (8, 8), 128).save(image)
    loaded = loaded_after(f"""
        from ravit.cli import main
        assert main(["predict", {str(tiny_run)!r}, {str(image)!r}, "--json"]) == 0
        assert main(["predict", {str(tiny_run)!r}, {str(image)!r}, "--budget", "0.7"]) == 0
    """)
    assert "ravit.runtime.prediction" in loaded and "ravit.evaluation" in loaded
    assert sorted(m for m in loaded if m.startswith("ravit.training")) == []
