"""The Binder environment: built fresh from ``binder/``, it runs every notebook.

repo2docker (what Binder uses) reads ``binder/`` and, because that folder exists,
ignores configuration files at the repository's root. It installs
``binder/requirements.txt`` from the repository's root, so its ``.`` line installs
this package (not in editable mode). This test does the same in a new virtual
environment: it copies the files a clone would have (git's tracked and untracked,
not ignored) to a temporary folder, installs ``binder/requirements.txt`` there, adds
only the test tools (pytest, nbval), and runs every notebook with nbval and the same
sanitizers as ``make test``. So a notebook that needs a package missing from
``binder/requirements.txt``, or a file the repository does not have, fails here.

pip's download cache makes repeated runs quick; a first run downloads the packages.
Every process started carries a marker in its environment, and none may be left.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import wait_for_no_marked_processes

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
MARKER = "NOTEBOOK_SCHED_BINDER_TEST"
PIP_TIMEOUT = 240
RUN_TIMEOUT = 300

pytestmark = pytest.mark.timeout(PIP_TIMEOUT + RUN_TIMEOUT + 60)


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
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-6000:]
        raise AssertionError(f"{' '.join(map(str, command))} exited {done.returncode}:\n{output}")
    return done


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


def test_fresh_binder_environment_runs_every_notebook(tmp_path):
    repo = tmp_path / "repo"
    for name in repository_files():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    notebooks = sorted((repo / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    assert len(notebooks) >= 4, notebooks

    marker = secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({MARKER: marker, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    started = time.monotonic()
    try:
        run([sys.executable, "-m", "venv", str(venv)], timeout=120, env=env)
        # What repo2docker runs, from the repository's root:
        run(
            [python, "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"],
            timeout=PIP_TIMEOUT,
            cwd=repo,
            env=env,
        )
        run([python, "-m", "pip", "install", "-q", "pytest", "nbval"], timeout=120, env=env)
        installed = run(
            [python, "-c", "import notebook_sched; print(notebook_sched.__file__)"],
            timeout=60,
            cwd=tmp_path,
            env=env,
        ).stdout.strip()
        assert installed.startswith(str(venv)), f"notebook_sched came from {installed}"
        install_seconds = time.monotonic() - started

        (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -ra\n")
        done = subprocess.run(
            [
                python,
                "-m",
                "pytest",
                "-c",
                tmp_path / "pytest.ini",
                "--rootdir",
                repo,
                "-p",
                "no:cacheprovider",
                "--nbval",
                "--nbval-current-env",
                "--nbval-sanitize-with",
                repo / "tests" / "nbval_sanitize.cfg",
                "--nbval-cell-timeout=120",
                *notebooks,
            ],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    finally:
        left = wait_for_no_marked_processes(MARKER, marker)
        for proc in left:
            proc.kill()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-8000:]
    summary = output.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary, summary
    assert not left, f"processes left after the notebooks ran: {left}"
    print(f"binder venv: install {install_seconds:.0f} s, {summary}")
