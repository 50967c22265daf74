"""The Binder environment: ``binder/`` follows repo2docker's rules, and an environment
built fresh from it (tests/binder_env.py) holds this package and every module a tutorial
imports.

Running the tutorials there is ``tests/test_browser_lab.py``'s work: it runs each one
with Run All in JupyterLab started from this environment, the front end and the
packages a Binder user gets; a tutorial that needs a missing package fails there, in
the cell that imports it. This module checks the cheap part first, so a missing
package is named at once, without a browser.
"""

from __future__ import annotations

import ast
import os
import re

import nbformat

from .binder_env import ROOT, run

BINDER = ROOT / "binder"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))


def test_binder_folder_follows_repo2docker_rules():
    requirements = (BINDER / "requirements.txt").read_text().splitlines()
    entries = [line.split("#")[0].strip() for line in requirements]
    entries = [entry for entry in entries if entry]
    # "." (with extras) installs the repository itself; repo2docker runs pip from the root.
    assert any(re.fullmatch(r"\.(\[[\w,-]+\])?", entry) for entry in entries), entries
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.1[1-9]", runtime), runtime
    postbuild = BINDER / "postBuild"
    if postbuild.exists():
        assert os.access(postbuild, os.X_OK), "binder/postBuild must be executable"
    allowed = {"requirements.txt", "runtime.txt", "postBuild", "apt.txt", "start"}
    assert {p.name for p in BINDER.iterdir()} <= allowed


def imported_modules(path) -> set[str]:
    """The top-level modules a notebook's code cells import (magics lines left out)."""
    names: set[str] = set()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        try:
            tree = ast.parse(source)
        except SyntaxError:  # a cell that shows an error on purpose
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_the_binder_environment_holds_the_package_and_what_the_tutorials_import(binder_env):
    modules = set().union(*(imported_modules(path) for path in NOTEBOOKS))
    assert {"notebook_sched", "dask", "numpy"} <= modules, modules
    script = (
        "import importlib, sys\n"
        "import notebook_sched\n"
        "print(notebook_sched.__file__)\n"
        f"for name in {sorted(modules)!r}:\n"
        "    importlib.import_module(name)\n"
    )
    done = run(
        [binder_env.python, "-c", script],
        timeout=120,
        cwd=binder_env.repo.parent,
        env=binder_env.env,
    )
    installed = done.stdout.strip().splitlines()[0]
    assert installed.startswith(str(binder_env.venv)), f"notebook_sched came from {installed}"
    assert not installed.startswith(str(ROOT) + os.sep)
