"""The import graph stays the one ARCHITECTURE.md draws: down only, no cycle, cheap roots.

Three checks:

* ``import notebook_sched`` in a fresh interpreter loads only the bottom layers and
  nothing heavy or notebook-related; the layers above come in on first use;
* a spawned process worker loads only what running a job needs (the engine and what
  is below it, the job format, cloudpickle);
* every import in the package (module level and lazy ones inside functions alike,
  read with ``ast``), and every module named in a string (a registry entry, an
  ``import_module`` target), points down the layer order below or stays inside its
  own layer, and no set of modules imports itself round, lazily or not.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import notebook_sched

PACKAGE = Path(notebook_sched.__file__).parent

# Bottom first.  A module may import modules of a lower layer, or of its own layer;
# ``schedulers`` and ``distributed`` are side by side (neither imports the other).
LAYERS: list[tuple[str, ...]] = [
    ("config",),
    ("graph", "graph_walk", "calls"),
    (
        "events",
        "errors",
        "failure",
        "environment",
        "tracebacks",
        "gil",
        "measure",
        "heap_trim",
        "task_runner",
        "_forkguard",
        "_spawn",
        "task_output",
        "plan",
    ),
    ("engine", "reporter"),
    ("cache",),  # the result cache (issue 18): fingerprints and stores, below the backends
    ("schedulers",),
    ("distributed",),
    ("api",),
    ("lazy",),
    ("interop",),
    ("debug",),
    ("diagnostics",),
    ("background",),  # background jobs: run computes (delayed), reruns (debug), views
    ("ipython",),
    ("", "__main__", "demo"),  # the package root wires the layers; the command line
]
PEERS = {("schedulers", "distributed")}  # same height: imports between them are errors

BOTTOM = {"", "config", "graph", "graph_walk", "events", "errors", "failure"}
HEAVY = [
    "IPython",
    "ipywidgets",
    "ipykernel",
    "matplotlib",
    "dask",
    "numpy",
    "cloudpickle",
    "multiprocessing",
    "concurrent.futures",
]
# What a process worker needs: the task runner (with the clocks and meter of
# ``measure``/``gil``), the job format and the worker loop (with its fork guard and BLAS
# thread limits), and what they stand on.
WORKER_ALLOWED = BOTTOM | {
    "task_runner",
    "measure",
    "gil",
    "_forkguard",
    "task_output",
    "schedulers",
    "schedulers._job",
    "schedulers._worker",
    "schedulers._blas",
}


def _run(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ours(modules: list[str]) -> set[str]:
    """Package module names relative to the package ("" for the root)."""
    return {
        m.removeprefix("notebook_sched").removeprefix(".")
        for m in modules
        if m == "notebook_sched" or m.startswith("notebook_sched.")
    }


# -- what loads ------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_import_loads_only_the_bottom_layers_and_nothing_heavy():
    found = _run(
        "import json, sys, notebook_sched\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'heavy': heavy}))\n"
    )
    assert found["heavy"] == []
    assert _ours(found["modules"]) <= BOTTOM, sorted(_ours(found["modules"]) - BOTTOM)


@pytest.mark.timeout(120)
def test_first_use_registers_the_layers_above_once():
    found = _run(
        "import json, sys, notebook_sched as ns\n"
        "from notebook_sched import api\n"
        "before = [h.__name__ for h in api._run_hooks]\n"
        "try:\n"
        "    ns.config.set(scheduler='gpu')\n"
        "    error = None\n"
        "except ValueError as exc:\n"
        "    error = str(exc)\n"
        "ns.get({'a': 1}, 'a', scheduler='sync')\n"
        "after = [h.__name__ for h in api._run_hooks]\n"
        "print(json.dumps({'before': before, 'after': after, 'error': error,\n"
        "                  'modules': sorted(sys.modules)}))\n"
    )
    assert found["before"] == []  # importing the API registers nothing
    assert found["after"] == ["failure_hook", "progress_hook", "advise_hook"]
    assert "Unknown scheduler 'gpu'" in found["error"] and "threads" in found["error"]
    assert {"debug", "diagnostics.hooks", "interop.mirror"} <= _ours(found["modules"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["distributed", "dask"])
def test_the_environment_may_name_a_backend_of_a_layer_above(name, monkeypatch):
    monkeypatch.setenv("NOTEBOOK_SCHED_SCHEDULER", name)
    found = _run(
        "import json, sys, notebook_sched as ns\n"
        "modules = sorted(sys.modules)\n"
        "print(json.dumps({'modules': modules, 'scheduler': ns.config.get('scheduler')}))\n"
    )
    # The names are checked with the registry alone: no API, hooks or Dask at import.
    assert _ours(found["modules"]) <= BOTTOM | {"schedulers", "interop"}
    assert found["scheduler"] == name


def test_delayed_stays_the_function_after_its_module_is_imported():
    import importlib
    import types

    importlib.import_module("notebook_sched.lazy")
    assert callable(notebook_sched.delayed) and notebook_sched.delayed.__name__ == "delayed"
    from notebook_sched import delayed

    assert delayed is notebook_sched.delayed
    # No module shadows a public name, so the package is a plain module (picklable by
    # reference: tasks that mention it run in worker processes).
    assert type(notebook_sched) is types.ModuleType
    public = set(notebook_sched.__all__)
    assert not {p.stem for p in PACKAGE.iterdir()} & (public - {"config", "events", "schedulers"})


@pytest.mark.timeout(120)
def test_a_process_worker_loads_only_what_running_a_job_needs():
    found = _run(
        "import json, sys\n"
        "import notebook_sched as ns\n"
        "def loaded():\n"
        "    import sys\n"
        "    return sorted(sys.modules)\n"
        "modules = ns.get({'m': (loaded,)}, 'm', scheduler='processes', num_workers=1)\n"
        "print(json.dumps({'modules': modules}))\n"
    )
    modules = found["modules"]
    assert "notebook_sched.schedulers._worker" in modules  # it did run in a worker
    assert _ours(modules) <= WORKER_ALLOWED, sorted(_ours(modules) - WORKER_ALLOWED)
    third_party = [m for m in HEAVY if "." not in m and m not in ("cloudpickle", "multiprocessing")]
    heavy = [m for m in third_party if m in modules]
    assert heavy == []


# -- the directions -----------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = PACKAGE.joinpath(*name.split(".")) if name else PACKAGE
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:`` (never run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def _imports(path: Path) -> set[str]:
    """Package modules imported anywhere in ``path`` (relative names, "" the root)."""
    me = _module_name(path)
    parts = me.split(".") if me else []
    package = parts if path.name == "__init__.py" else parts[:-1]
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif (node.module or "").split(".")[0] == "notebook_sched":
                target = node.module.removeprefix("notebook_sched").removeprefix(".")
            else:
                continue
            subs = [f"{target}.{a.name}".lstrip(".") for a in node.names]
            names = [f"notebook_sched.{s}" if _is_module(s) else "" for s in subs]
            names = [n for n in names if n] or [f"notebook_sched.{target}".rstrip(".")]
        else:
            continue
        for name in names:
            if name == "notebook_sched" or name.startswith("notebook_sched."):
                found.add(name.removeprefix("notebook_sched").removeprefix("."))
    found.discard(me)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    top = module.split(".")[0]
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"module {module!r} is in no layer: add it to LAYERS")


def _allowed(importer: str, imported: str) -> bool:
    a, b = _layer(importer), _layer(imported)
    if (LAYERS[a][0], LAYERS[b][0]) in PEERS or (LAYERS[b][0], LAYERS[a][0]) in PEERS:
        return False
    return b <= a


def test_the_parser_sees_lazy_relative_and_absolute_imports():
    graph = _graph()
    assert "api" in graph["lazy"]  # module level, relative
    assert "schedulers" in graph["api"]
    assert "diagnostics.advice" in graph["diagnostics"]  # lazy, inside a function
    assert "client" not in " ".join(graph["distributed.future"])  # TYPE_CHECKING only
    assert "debug.rerun" in graph["debug"] and "interop" in graph[""]
    assert "distributed.backend" in _named_modules(PACKAGE / "__init__.py")


def test_imports_point_down_the_layers():
    wrong = sorted(
        (importer, imported)
        for importer, targets in _graph().items()
        for imported in targets
        if not _allowed(importer, imported)
    )
    assert wrong == [], "imports against ARCHITECTURE.md's layer order: " + ", ".join(
        f"{a or 'notebook_sched'} -> {b}" for a, b in wrong
    )


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _named_modules(path: Path) -> set[str]:
    """Package modules named in string literals (``importlib.import_module`` targets,
    registry entries, ``sys.modules`` lookups): imports by another name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.removeprefix("notebook_sched.")
            if node.value.startswith("notebook_sched.") and name and _is_module(name):
                found.add(name)
    return found


def test_no_module_names_a_higher_layer_in_a_string():
    wrong = sorted(
        (_module_name(path), named)
        for path in sorted(PACKAGE.rglob("*.py"))
        for named in _named_modules(path)
        if not _allowed(_module_name(path), named)
    )
    assert wrong == [], "modules of higher layers named as strings: " + ", ".join(
        f"{a or 'notebook_sched'} -> {b}" for a, b in wrong
    )


def _graph_with_names() -> dict[str, set[str]]:
    """The imports plus the modules each module names in a string."""
    graph = _graph()
    for path in sorted(PACKAGE.rglob("*.py")):
        graph[_module_name(path)] |= _named_modules(path) - {_module_name(path)}
    return graph


def test_no_import_cycles_lazy_ones_and_names_included():
    assert _cycles(_graph_with_names()) == []


def test_the_cycle_finder_finds_a_lazy_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    # The registry names its backends: one that imported the registry back would be
    # a cycle by name.
    named = _graph_with_names()
    assert "schedulers.threads" in named["schedulers"]
    assert "schedulers" not in named["schedulers.threads"]
    assert not _allowed("config", "schedulers") and _allowed("api", "config")
    assert not _allowed("distributed.client", "schedulers.processes")


def _unit(module: str) -> str:
    """What owns its private names: a subpackage, or a module at the top level."""
    return module.split(".")[0]


def _private_uses(path: Path) -> set[tuple[str, str]]:
    """``(module, name)`` of private names (``_x``) this file takes from package modules
    of another unit: ``from m import _x``, and ``m._x`` on an imported module ``m``."""
    me = _module_name(path)
    parts = me.split(".") if me else []
    package = parts if path.name == "__init__.py" else parts[:-1]
    tree = ast.parse(path.read_text(), str(path))
    modules: dict[str, str] = {}  # local name -> package module
    found: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = package[: len(package) - node.level + 1]
        target = ".".join([*base, *([node.module] if node.module else [])])
        for alias in node.names:
            sub = f"{target}.{alias.name}".lstrip(".")
            if _is_module(sub):
                modules[alias.asname or alias.name] = sub
            elif alias.name.startswith("_") and not alias.name.startswith("__"):
                found.add((target, alias.name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = modules.get(node.value.id)
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            if module is not None and private:
                found.add((module, node.attr))
    return {(m, name) for m, name in found if _unit(m) != _unit(me)}


def test_no_private_name_is_used_across_packages():
    wrong = sorted(
        (_module_name(path) or "notebook_sched", f"{module}.{name}")
        for path in sorted(PACKAGE.rglob("*.py"))
        for module, name in _private_uses(path)
    )
    assert wrong == [], "private names used from another package: " + ", ".join(
        f"{a} -> {b}" for a, b in wrong
    )
