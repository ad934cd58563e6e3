"""Guards of DESIGN.md §2: the API never loads torch or the simulators, the library never loads the service, and
backend/ and worker/ hold no import circle."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _loaded(statement: str, names: tuple[str, ...]) -> list[str]:
    """The modules among `names` (or their submodules) that `statement` leaves in sys.modules, in a fresh process."""
    code = (
        f"import json, sys\n{statement}\n"
        f"names = {names!r}\n"
        "print(json.dumps(sorted({m for m in sys.modules for n in names if m == n or m.startswith(n + '.')})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_api_loads_no_torch_and_no_simulator():
    assert _loaded("import backend.main", ("torch", "dm_control", "mujoco", "av")) == []


@pytest.mark.parametrize("module", ["aime_core", "aime_core.client", "aime_core.config", "aime_core.cli"])
def test_the_library_loads_no_service(module):
    assert _loaded(f"import {module}", ("fastapi", "celery", "sqlmodel", "backend", "worker")) == []


def test_the_library_names_no_service_module():
    """No `import backend...`/`import worker...` anywhere in aime_core, not even inside a function."""
    found = []
    for path in sorted((ROOT / "aime_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            found += [
                f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("backend", "worker")
            ]
    assert found == []


def _module_imports(package: str) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports (at any depth: late imports count too)."""
    files = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (ROOT / package).rglob("*.py")
        if "migrations" not in p.parts
    }
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from backend import crud` imports backend.crud; `from backend.models import Run` backend.models
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith(package) and t != package:
                    deps.add(t)
        graph[mod] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("package", ["backend", "worker"])
def test_no_import_circle(package):
    graph = _module_imports(package)
    assert graph, package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_circle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_aime_command_has_library_and_service_commands():
    def commands(module: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    full, library = commands("worker.cli"), commands("aime_core")
    for name in ("collect", "train", "evaluate", "test-synthetic", "sweep"):
        assert name in full and name in library
    assert "  up " in full and "  worker " in full
    assert "  up " not in library and "  worker " not in library
