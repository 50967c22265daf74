"""Run Dask's shipped test modules on Dask's own schedulers and on ours; compare.

``python -m tests.dask_suite.run [--backends dask,sync,threads,processes] [--fast]
[--modules m1,m2]`` runs each listed module of the installed ``dask`` in place (no
copy of Dask's sources here), once per backend, in a pytest subprocess with our
plugin (``plugin.py``; ``dask`` is the baseline: Dask's own schedulers).  It then
prints one table row per module and backend (passed / failed / skipped) and lists
every *regression*: a test that passed on the baseline but fails on one of ours
(tests in ``skips.py`` are skipped under ours and so never count).  The exit status
is 1 when there is a regression, so ``make test-dask`` fails on one.  Results go to
``build/dask-suite/`` (JUnit XML per backend and ``report.md``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = ROOT / "build" / "dask-suite"

MODULES = (
    "tests/test_delayed.py",
    "tests/test_base.py",
    "tests/test_local.py",
    "tests/test_threaded.py",
    "tests/test_multiprocessing.py",
    "tests/test_callbacks.py",
    "diagnostics/tests",
    "array/tests/test_array_core.py",
    "array/tests/test_reductions.py",
    "array/tests/test_slicing.py",
    "bag/tests/test_bag.py",
)
# The fast subset `make test` runs (through tests/test_dask_suite.py): the
# scheduler-facing modules, about a minute for all backends together.
FAST_MODULES = (
    "tests/test_local.py",
    "tests/test_threaded.py",
    "tests/test_multiprocessing.py",
    "tests/test_callbacks.py",
    "diagnostics/tests",
)
BACKENDS = ("dask", "sync", "threads", "processes", "dask-processes")
# "dask-processes" is Dask's own processes scheduler as the default: a test that fails
# there needs shared memory (it writes into caller-side arrays, shares a lock) and is
# no regression of our processes backend.  dask-sync / dask-threads can be run too.


def dask_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("dask")
    if spec is None or spec.origin is None:
        raise SystemExit("dask is not installed in this environment: pip install -e '.[test]'")
    return Path(spec.origin).parent


def pytest_command(backend: str, paths: list[str], xml: Path, extra: list[str]) -> list[str]:
    base = dask_dir()
    return [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        str(HERE / "pytest.ini"),
        "--rootdir",
        str(ROOT),
        "--confcutdir",
        str(base),
        "-q",
        "-p",
        "no:randomly",
        "--ns-backend",
        backend,
        f"--junitxml={xml}",
        *extra,
        *(str(base / p) for p in paths),
    ]


def run_backend(backend: str, modules: list[str], extra: list[str]) -> tuple[Path, float]:
    OUT.mkdir(parents=True, exist_ok=True)
    xml = OUT / f"{backend}.xml"
    log = OUT / f"{backend}.log"
    start = time.monotonic()
    with open(log, "w") as out:
        subprocess.run(
            pytest_command(backend, modules, xml, extra),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
    return xml, time.monotonic() - start


def outcomes(xml: Path) -> dict[str, str]:
    """``{test id: passed|failed|skipped}`` from a JUnit XML file."""
    results: dict[str, str] = {}
    if not xml.exists():
        return results
    for case in ET.parse(xml).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        tags = {child.tag for child in case}
        if "failure" in tags or "error" in tags:
            outcome = "failed"
        elif "skipped" in tags:
            outcome = "skipped"
        else:
            outcome = "passed"
        if results.get(test_id) != "failed":  # a teardown error after a pass is a failure
            results[test_id] = outcome
    return results


def short(test_id: str) -> str:
    """``dask.bag.tests.test_bag::test_x`` rather than the full dotted path."""
    at = test_id.find("dask.")
    return test_id[at:] if at >= 0 else test_id


def module_of(test_id: str, modules: list[str]) -> str:
    dotted = test_id.split("::")[0]
    for module in modules:
        stem = module.removesuffix(".py").replace("/", ".")
        if f"dask.{stem}" in dotted or dotted.endswith(stem):
            return module
    return "other"


def report(results: dict[str, dict[str, str]], times: dict[str, float], modules: list[str]):
    """The markdown table and the regressions against the baseline."""
    lines = [
        "| module | " + " | ".join(results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for module in modules:
        cells = []
        for res in results.values():
            c = Counter(o for t, o in res.items() if module_of(t, modules) == module)
            cells.append(f"{c['passed']} / {c['failed']} / {c['skipped']}")
        lines.append(f"| `{module}` | " + " | ".join(cells) + " |")
    lines.append("| time (s) | " + " | ".join(f"{times[b]:.0f}" for b in results) + " |")
    regressions = []
    base = results.get("dask")
    if base is not None:
        for backend, res in results.items():
            if backend.startswith("dask"):
                continue
            same_kind = results.get(f"dask-{backend}", {})
            for test_id, outcome in sorted(res.items()):
                if outcome != "failed" or base.get(test_id) != "passed":
                    continue
                if same_kind.get(test_id, "passed") != "passed":
                    continue  # Dask's own scheduler of this kind fails it too
                regressions.append(f"{backend}: {short(test_id)}")
    return lines, regressions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--modules", default=None, help="comma-separated, relative to dask/")
    parser.add_argument("--fast", action="store_true", help="the fast subset only")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take backends not run now from build/dask-suite/<backend>.xml (e.g. the baseline)",
    )
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    if args.modules:
        modules = args.modules.split(",")
    else:
        modules = list(FAST_MODULES if args.fast else MODULES)
    backends = args.backends.split(",")
    results: dict[str, dict[str, str]] = {}
    times: dict[str, float] = {}
    if args.reuse:
        for backend in BACKENDS:
            xml = OUT / f"{backend}.xml"
            if backend not in backends and xml.exists():
                results[backend] = outcomes(xml)
                times[backend] = float(ET.parse(xml).getroot().find("testsuite").get("time"))
    for backend in backends:
        xml, seconds = run_backend(backend, modules, args.pytest_args)
        results[backend] = outcomes(xml)
        times[backend] = seconds
        print(f"{backend}: {Counter(results[backend].values())} in {seconds:.0f} s", flush=True)
    lines, regressions = report(results, times, modules)
    text = "\n".join(
        [
            "Passed / failed / skipped per module and backend ('dask' is Dask's own "
            "default scheduler, the baseline; 'dask-processes' Dask's own processes "
            "scheduler as the default).",
            "",
            *lines,
            "",
            f"Regressions (pass on Dask's default scheduler, and on Dask's own scheduler of "
            f"the same kind where it ran, fail on ours): {len(regressions)}",
            *(f"- {r}" for r in regressions),
        ]
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.md").write_text(text + "\n")
    print(text)
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
