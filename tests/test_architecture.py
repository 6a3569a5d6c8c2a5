"""The layers of docs/architecture.md hold: import contracts (import-linter) and no cycles."""

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _lint_imports(source_root: Path) -> subprocess.CompletedProcess:
    """Run the contracts of pyproject.toml on the package found under ``source_root``."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, "
            "no_cache=True))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(source_root), "PATH": ""}, cwd=source_root)


def test_import_contracts_are_kept():
    result = _lint_imports(SRC)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_layer_importing_upwards_breaks_the_contracts(tmp_path):
    """The contracts can fail: core importing the fit layer (on a copy) is caught."""
    shutil.copytree(SRC / "kernelfit", tmp_path / "kernelfit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    forward = tmp_path / "kernelfit" / "core" / "forward.py"
    forward.write_text(forward.read_text() + "\n\ndef _upward():\n"
                       "    from ..fit.result import KernelFit\n    return KernelFit\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "kernelfit.core.forward -> kernelfit.fit.result" in result.stdout


def _import_cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    modules = sorted(graph.modules)
    edges = {m: sorted(set(graph.find_modules_directly_imported_by(m)) & set(modules))
             for m in modules}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles_counting_imports_inside_functions():
    # grimp reads every import statement, those inside functions included.
    graph = grimp.build_graph("kernelfit", cache_dir=None)
    assert "kernelfit.report.html" in graph.find_modules_directly_imported_by(
        "kernelfit.fit.result"), "grimp must see the function-level import of the report"
    assert _import_cycles(graph) == []


@pytest.mark.parametrize("package", ["core", "stats", "solvers", "select", "models", "fit",
                                     "front", "io", "report"])
def test_every_layer_states_its_rule(package):
    import importlib

    doc = importlib.import_module(f"kernelfit.{package}").__doc__
    assert doc and "Rule:" in doc
