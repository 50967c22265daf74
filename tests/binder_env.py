"""A fresh Binder environment, built the way repo2docker builds one, for the tests.

repo2docker (what Binder uses) reads ``binder/`` and, because that folder exists,
ignores configuration files at the repository's root. It installs
``binder/requirements.txt`` from the repository's root, so its ``.`` line installs this
package (not in editable mode), into an environment whose base already holds JupyterLab.

:func:`build` does the same in a new virtual environment: it copies the files a clone
would have (git's tracked and untracked, not ignored) to a folder, installs
``binder/requirements.txt`` from there, and adds JupyterLab (the version of the test
environment, so pip's cache serves it), as repo2docker's base environment does. Nothing
of the test environment leaks in: ``PYTHONPATH`` and ``VIRTUAL_ENV`` are dropped.

The environment is built once per test session (the ``binder_env`` fixture in
``conftest.py``). ``tests/test_browser_lab.py`` runs every tutorial in it, in JupyterLab
in Chromium, with Run All: so a notebook that needs a package missing from
``binder/requirements.txt``, or a file the repository does not have, fails there, in the
front end a Binder user gets. pip's download cache makes repeated builds quick.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIP_TIMEOUT = 240
MARKER = "NOTEBOOK_SCHED_BINDER_TEST"  # in the environment of every process it starts


@dataclass
class BinderEnv:
    """The copy of the repository, its environment's interpreter, and the environment
    variables its processes run with (the leak ``marker`` variable among them)."""

    repo: Path
    venv: Path
    env: dict = field(repr=False)
    install_seconds: float = 0.0

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def repository_files() -> list[str]:
    """Paths (relative to ROOT) of the files a fresh clone would have."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: the parts we need
        keep = ("pyproject.toml", "README.md", "notebook_sched/", "binder/", "notebooks/")
        return [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file() and str(p.relative_to(ROOT)).startswith(keep)
        ] + ["tests/nbval_sanitize.cfg"]
    return [name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]


def run(command: list, *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run ``command``; its output's tail in the assertion when it fails."""
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-6000:]
        raise AssertionError(f"{' '.join(map(str, command))} exited {done.returncode}:\n{output}")
    return done


def build(folder: Path, marker_variable: str, marker: str) -> BinderEnv:
    """Copy the repository into ``folder / "repo"`` and build ``folder / "venv"`` from
    ``binder/requirements.txt`` as repo2docker does, plus JupyterLab."""
    repo = folder / "repo"
    for name in repository_files():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({marker_variable: marker, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    env.pop("PYTEST_CURRENT_TEST", None)
    binder = BinderEnv(repo=repo, venv=folder / "venv", env=env)
    started = time.monotonic()
    run([sys.executable, "-m", "venv", str(binder.venv)], timeout=120, env=env)
    # What repo2docker runs, from the repository's root, plus what its base environment
    # holds: JupyterLab (our version, which pip's cache has). One pip run, one resolve.
    lab = f"jupyterlab=={importlib.metadata.version('jupyterlab')}"
    run(
        [binder.python, "-m", "pip", "install", "-q", "-r", "binder/requirements.txt", lab],
        timeout=PIP_TIMEOUT,
        cwd=repo,
        env=env,
    )
    binder.install_seconds = time.monotonic() - started
    return binder
