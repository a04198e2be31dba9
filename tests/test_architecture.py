"""The layout's rules that import-linter cannot state: no import cycle, and what each command loads.

pyproject.toml's import-linter contracts (CI runs `lint-imports`) keep the layers; these tests keep
the package free of cycles, lazy imports included, and check in a fresh interpreter which heavy
packages each entry point pulls in when imported (a command must start, and answer Ctrl-C, fast).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grimp
import pytest

from tests.support.servers import REPOSITORY

HEAVY = ("torch", "transformers", "gradio", "ray", "fastapi", "numpy")


def strongly_connected(graph: grimp.ImportGraph, modules: set[str]) -> list[set[str]]:
    """Tarjan's strongly connected components of the import graph restricted to `modules`."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            components.append(component)

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return components


def test_no_import_cycle_in_the_package_lazy_imports_included():
    graph = grimp.build_graph("sam_demo")
    modules = {m for m in graph.modules if m.startswith("sam_demo")}
    assert len(modules) > 40
    cycles = [sorted(c) for c in strongly_connected(graph, modules) if len(c) > 1]
    assert cycles == []


def test_a_planted_cycle_is_found():
    graph = grimp.build_graph("sam_demo")
    graph.add_import(importer="sam_demo.engine.utils.cache", imported="sam_demo.engine.sam_engine")
    modules = {m for m in graph.modules if m.startswith("sam_demo")}
    assert any(
        {"sam_demo.engine.utils.cache", "sam_demo.engine.sam_engine"} <= c for c in strongly_connected(graph, modules)
    )


# (what is imported, heavy packages it must load, heavy packages it must not load)
ENTRY_POINTS = [
    ("sam_demo", set(), set(HEAVY)),  # `from sam_demo import SamEngine` loads on first use
    ("sam_demo.batch.cli", set(), set(HEAVY)),  # `python -m sam_demo.batch`: Ctrl-C from the first moment
    ("sam_demo.precompute", set(), set(HEAVY)),  # `python -m sam_demo.precompute`: the same
    ("sam_demo.serve.cli", set(), {"torch", "transformers", "gradio", "ray", "fastapi"}),  # no Ray: one message
    ("sam_demo.serve", set(), {"torch", "transformers", "gradio", "ray"}),  # serve_config.yaml's import path
    ("sam_demo.serve.gateway", {"ray", "fastapi"}, {"torch", "transformers", "gradio"}),  # the Serve ingress
    ("sam_demo.flags", set(), {"torch", "transformers", "gradio", "ray", "fastapi"}),
    ("sam_demo.endpoint.wire", {"numpy"}, {"torch", "transformers", "gradio", "ray", "fastapi"}),
    ("sam_demo.endpoint.http", {"fastapi"}, {"torch", "transformers", "gradio", "ray"}),
    ("sam_demo.engine.predictor", {"torch", "numpy"}, {"gradio", "ray", "fastapi"}),
    ("sam_demo.checkpoints", {"torch", "transformers"}, {"gradio", "ray", "fastapi"}),
    ("sam_demo.app", {"torch", "gradio", "fastapi"}, {"ray"}),  # `python app.py`
]


@pytest.mark.parametrize(("module", "loads", "spares"), ENTRY_POINTS, ids=[e[0] for e in ENTRY_POINTS])
def test_what_each_entry_point_imports(module, loads, spares):
    code = (
        f"import json, sys; import {module}; print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert loads <= loaded, f"{module} should load {sorted(loads - loaded)}"
    assert not loaded & spares, f"{module} loads {sorted(loaded & spares)}"


@pytest.mark.parametrize(
    ("environment", "spin"),
    [({}, "30000"), ({"GOMP_SPINCOUNT": "5"}, "5"), ({"OMP_WAIT_POLICY": "PASSIVE"}, None)],
    ids=["default", "asked-for-spin", "asked-for-wait-policy"],
)
def test_torch_loads_with_the_packages_openmp_spin(environment, spin):
    """libgomp reads GOMP_SPINCOUNT once, when torch loads: the package sets it first (see
    sam_demo/__init__.py), unless the environment already says how OpenMP threads should wait."""
    code = (
        "import json, os, sys; import sam_demo.engine.predictor; "
        "print(json.dumps(['torch' in sys.modules, os.environ.get('GOMP_SPINCOUNT')]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")} | environment
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPOSITORY, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, spin]
