"""The package outside notebooks: cheap import, quiet scripts, text progress on request."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(60)

HEAVY = ("IPython", "ipykernel", "ipywidgets", "matplotlib", "tqdm")


def run_script(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=50,
    )


def test_import_does_not_load_notebook_packages():
    result = run_script(
        f"""
        import sys
        import notebook_sched as ns
        ns.get({{"a": 1, "b": (sum, ["a", "a"])}}, "b", scheduler="threads")
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_scripts_are_quiet_by_default_and_show_text_progress_on_request():
    result = run_script(
        """
        import time
        import notebook_sched as ns
        def slow(x):
            time.sleep(0.01)
            return x
        dsk = {f"load-{i}": (slow, i) for i in range(80)}
        dsk["total"] = (sum, [f"load-{i}" for i in range(80)])
        assert ns.get(dsk, "total", scheduler="sync") == sum(range(80))
        print("quiet done")
        with ns.progress(delay=0.2):
            assert ns.get(dsk, "total", scheduler="sync") == sum(range(80))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "quiet done\n"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # not a terminal: only the final line
    assert "100% 81/81 tasks" in lines[0] and lines[0].endswith("done")


def test_load_and_unload_extension_in_a_shell():
    result = run_script(
        """
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "notebook_sched")
        assert "schedule" in shell.magics_manager.magics["cell"]
        shell.run_line_magic("schedule", "sync --workers 2")
        import notebook_sched as ns
        assert (ns.config.get("scheduler"), ns.config.get("num_workers")) == ("sync", 2)
        shell.run_line_magic("unload_ext", "notebook_sched")
        assert "schedule" not in shell.magics_manager.magics["line"]
        assert "sched_rerun" not in shell.magics_manager.magics["line"]
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "notebook_sched: scheduler: sync, workers: 2 (for later cells)",
        "ok",
    ]
