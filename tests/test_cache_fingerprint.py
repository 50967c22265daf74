"""Task fingerprints (issue 18, "What makes two tasks the same"): pure, no storage.

Each row of the issue has a test that edits one thing and checks that the task's
digest changes and that ``explain`` names the edit; each documented no-change edit
has a test that the digest stays; the uncacheable cases give their reason.  Cells
are simulated by ``exec``'ing source in a fresh ``__main__`` namespace, as a rerun
cell does.
"""

from __future__ import annotations

import functools
import importlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest

import notebook_sched as ns
from notebook_sched.cache.fingerprint import TaskPrint, explain, graph_fingerprints
from notebook_sched.graph import flatten_keys


def cell(source: str) -> dict:
    """Run ``source`` as a notebook cell would: in a fresh ``__main__`` namespace."""
    namespace = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(source), "<cell>", "exec", dont_inherit=True), namespace)
    return namespace


def _inc(x):
    return x + 1


def task_print(func, *args, key="t") -> TaskPrint:
    return graph_fingerprints({key: (func, *args)}, [key])[key]


def changed(old: TaskPrint, new: TaskPrint) -> str:
    """Assert the digests differ; return what explain says."""
    assert old.digest is not None and new.digest is not None, (old.reason, new.reason)
    assert old.digest != new.digest
    return explain(old, new)


# -- what makes two tasks the same: each row changes the digest ---------------------------


def test_an_edited_function_body_changes_the_digest():
    old = task_print(cell("def clean(x):\n    return x + 1\n")["clean"], 1)
    new = task_print(cell("def clean(x):\n    return x + 2\n")["clean"], 1)
    assert changed(old, new) == "the function clean changed"


def test_an_edited_helper_changes_the_digest():
    source = """
        def parse_row(x):
            return x * {k}

        def clean(x):
            return parse_row(x) + 1
    """
    old = task_print(cell(source.format(k=2))["clean"], 1)
    new = task_print(cell(source.format(k=3))["clean"], 1)
    assert changed(old, new) == "helper parse_row changed"


def test_a_changed_global_changes_the_digest_even_when_a_helper_reads_it():
    source = """
        THRESHOLD = {t}

        def above(x):
            return x > THRESHOLD

        def clean(x):
            return above(x)
    """
    old = task_print(cell(source.format(t=0.5))["clean"], 1)
    new = task_print(cell(source.format(t=0.6))["clean"], 1)
    assert changed(old, new) == "global THRESHOLD changed"


def test_a_changed_closure_value_changes_the_digest():
    namespace = cell(
        """
        def make_scaler(scale):
            def scaled(x):
                return x * scale
            return scaled
        """
    )
    old = task_print(namespace["make_scaler"](2), 1)
    new = task_print(namespace["make_scaler"](3), 1)
    assert changed(old, new) == "closure variable scale changed"


def test_a_changed_default_or_keyword_default_changes_the_digest():
    old = task_print(cell("def load(x, sep=','):\n    return x\n")["load"], 1)
    new = task_print(cell("def load(x, sep=';'):\n    return x\n")["load"], 1)
    assert changed(old, new) == "default sep changed"
    old = task_print(cell("def load(x, *, sep=','):\n    return x\n")["load"], 1)
    new = task_print(cell("def load(x, *, sep=';'):\n    return x\n")["load"], 1)
    assert changed(old, new) == "default sep changed"


def test_changed_argument_content_changes_the_digest():
    def total(values, scale):
        return sum(values) * scale

    base = task_print(total, [1, 2, {"a": (3, 4.0)}], 2)
    assert base.digest == task_print(total, [1, 2, {"a": (3, 4.0)}], 2).digest  # content
    assert changed(base, task_print(total, [1, 2, {"a": (3, 4.5)}], 2)) == "argument 1 changed"
    assert changed(base, task_print(total, [1, 2, {"a": (3, 4.0)}], 3)) == "argument 2 changed"
    # 1, 1.0 and True are different arguments
    digests = {task_print(total, [], v).digest for v in (1, 1.0, True, "1", b"1")}
    assert len(digests) == 5


def test_an_array_mutated_in_place_changes_the_digest():
    array = np.arange(1000.0)
    before = task_print(np.sum, array)
    assert task_print(np.sum, array).digest == before.digest
    array[500] = -1.0
    assert changed(before, task_print(np.sum, array)) == "argument 1 changed"


def test_array_dtype_shape_layout_and_strided_views_count():
    array = np.arange(24, dtype="i8").reshape(4, 6)
    digests = {
        task_print(np.sum, a).digest
        for a in (array, array.astype("i4"), array.reshape(6, 4), np.asfortranarray(array))
    }
    assert len(digests) == 4
    view = array[:, ::2]  # not contiguous: hashed in pieces, content and strides count
    assert not view.flags.c_contiguous and not view.flags.f_contiguous
    assert task_print(np.sum, view).digest == task_print(np.sum, array.copy()[:, ::2]).digest
    before = task_print(np.sum, view)
    array[3, 4] = 99
    assert changed(before, task_print(np.sum, view)) == "argument 1 changed"
    objects = np.array([{"a": 1}, [2]], dtype=object)
    before = task_print(len, objects)
    objects[0]["a"] = 2
    assert changed(before, task_print(len, objects)) == "argument 1 changed"


def test_pandas_objects_by_content_index_and_columns():
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    before = task_print(len, frame)
    assert task_print(len, frame.copy()).digest == before.digest
    assert changed(before, task_print(len, frame.rename(columns={"b": "c"})))
    assert changed(before, task_print(len, frame.set_axis([5, 6, 7])))
    assert changed(before, task_print(len, frame.astype({"a": "float64"})))
    edited = frame.copy()
    edited.loc[1, "b"] = "w"
    assert changed(before, task_print(len, edited)) == "argument 1 changed"
    series = pd.Series(["a", "b"], dtype="category")
    other = series.cat.set_categories(["b", "a"])
    assert task_print(len, series).digest != task_print(len, other).digest


def test_the_fast_path_for_repeated_functions_gives_the_general_digests():
    # The first task of a function takes the general path, the next ones a fast path
    # (scalars and references only): each task's print must not depend on which.
    tasks = {
        "b": (_inc, 2, "x"),
        "c": (_inc, "x", "x"),  # a repeated reference: back to the general path
        "d": (_inc, 1.5, "s", -(2**70)),
        ("e", 3): (_inc, ("e", 0)),
        "uuid-00000000-0000-0000-0000-000000000000": (_inc, 1),  # Dask's pure=False
    }
    data = {"x": 5, ("e", 0): 7}
    together = graph_fingerprints({"a": (_inc, 1), **tasks, **data}, ["a", *tasks])
    for key, task in tasks.items():
        alone = graph_fingerprints({key: task, **data}, [key])[key]
        assert together[key] == alone, key
    assert together["uuid-00000000-0000-0000-0000-000000000000"].digest is None
    assert together["b"].parts[-1][0] == "dependency 'x'"
    # a global the shared function reads is read again on every run: an edit is seen
    space = cell("LIMIT = 1\ndef f(x):\n    return x + LIMIT\n")
    graph = {f"t{i}": (space["f"], i) for i in range(3)}
    before = graph_fingerprints(graph, list(graph))
    space["LIMIT"] = 2
    after = graph_fingerprints(graph, list(graph))
    assert all(before[k].digest != after[k].digest for k in graph)
    assert explain(before["t2"], after["t2"]) == "global LIMIT changed"


def test_an_installed_module_without_a_version_counts_by_its_file_not_a_scan(tmp_path, monkeypatch):
    from importlib import metadata

    from notebook_sched.cache import installed

    def no_scan():
        raise AssertionError("every distribution was scanned")

    monkeypatch.setattr(metadata, "packages_distributions", no_scan)
    source = tmp_path / "nsched_unversioned_pkg.py"
    source.write_text("X = 1\n")
    module = type(sys)("nsched_unversioned_pkg")
    module.__file__ = str(source)
    monkeypatch.setitem(sys.modules, "nsched_unversioned_pkg", module)
    monkeypatch.setattr(installed, "_versions", {})
    first = installed.version_of("nsched_unversioned_pkg")
    assert str(source) in first
    source.write_text("X = 22\n")  # a reinstall or an edit: another size and time
    installed._versions.clear()
    assert installed.version_of("nsched_unversioned_pkg") != first


def _install_namespace_portion(site, top: str, portion: str, dist: str | None, version: str):
    """A PEP 420 namespace package ``top`` (no __init__) with one portion, installed in
    ``site`` by the distribution ``dist`` at ``version`` (None: by no distribution)."""
    package = site / top / portion
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("def work(x):\n    return x + 1\n")
    if dist is None:
        return
    folder = dist.replace("-", "_")  # as installers name it
    for old in site.glob(f"{folder}-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    info = site / f"{folder}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{top}\n")
    (info / "RECORD").write_text(f"{top}/{portion}/__init__.py,,\n")


@pytest.fixture
def library_site(tmp_path, monkeypatch):
    """A folder on sys.path that counts as site-packages (installed code)."""
    from notebook_sched.cache import installed

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    roots = installed._ROOTS or installed._library_roots()
    monkeypatch.setattr(installed, "_ROOTS", (*roots, os.path.realpath(site) + os.sep))
    monkeypatch.setattr(installed, "_module_is_user", {})
    monkeypatch.setattr(installed, "_versions", {})
    yield site
    for name in [m for m in sys.modules if m.startswith("nsched_ns")]:
        del sys.modules[name]


def test_a_namespace_package_counts_by_its_distributions_versions(library_site):
    """A namespace package has no __file__: it counted by Python's version only, so
    upgrading the distribution that installs it gave the old result."""
    from notebook_sched.cache import installed

    _install_namespace_portion(library_site, "nsched_ns", "portion", "nsched-ns-portion", "1.0")
    importlib.invalidate_caches()
    work = importlib.import_module("nsched_ns.portion").work
    assert not installed.is_user_module(work.__module__)  # installed code: by version
    before = task_print(work, 1)
    assert before.digest is not None, before.reason
    _install_namespace_portion(library_site, "nsched_ns", "portion", "nsched-ns-portion", "2.0")
    importlib.invalidate_caches()
    installed._versions.clear()  # a new session after the upgrade
    after = task_print(work, 1)
    assert changed(before, after) == "the function work changed"
    installed._versions.clear()
    assert task_print(work, 1).digest == after.digest  # and stable while unchanged


def test_a_namespace_package_no_distribution_provides_is_uncacheable(library_site):
    _install_namespace_portion(library_site, "nsched_ns_bare", "portion", None, "")
    importlib.invalidate_caches()
    work = importlib.import_module("nsched_ns_bare.portion").work
    printed = task_print(work, 1)
    assert printed.digest is None
    assert "namespace package nsched_ns_bare" in printed.reason
    assert "no installed distribution" in printed.reason


def test_a_dependency_change_propagates_downstream():
    def inc(x):
        return x + 1

    def graph(start):
        return {"load": (inc, start), "parse": (inc, "load"), "clean": (inc, "parse")}

    old = graph_fingerprints(graph(1), ["clean"])
    new = graph_fingerprints(graph(2), ["clean"])
    assert all(old[k].digest != new[k].digest for k in ("load", "parse", "clean"))
    assert explain(old["load"], new["load"]) == "argument 1 changed"
    assert explain(old["clean"], new["clean"]) == "dependency 'parse' changed"


def test_partial_arguments_count():
    def scale(x, factor, offset=0):
        return x * factor + offset

    old = task_print(functools.partial(scale, factor=2), 1)
    assert changed(old, task_print(functools.partial(scale, factor=3), 1)) == (
        "partial keyword factor changed"
    )
    positional = task_print(functools.partial(scale, 1), 2)
    assert changed(positional, task_print(functools.partial(scale, 5), 2)) == (
        "partial argument 1 changed"
    )


def test_a_decorator_factory_argument_counts():
    namespace = cell(
        """
        import functools

        def scaled(k):
            def decorate(fn):
                @functools.wraps(fn)
                def wrapper(*args):
                    return k * fn(*args)
                return wrapper
            return decorate

        def base(x):
            return x + 1
        """
    )
    twice = namespace["scaled"](2)(namespace["base"])
    thrice = namespace["scaled"](3)(namespace["base"])
    assert changed(task_print(twice, 1), task_print(thrice, 1)) == "closure variable k changed"
    # the wrapped function itself is covered too
    edited = cell("def base(x):\n    return x + 2\n")["base"]
    assert changed(task_print(twice, 1), task_print(namespace["scaled"](2)(edited), 1))


def test_a_user_module_edited_and_reloaded_changes_the_digest(tmp_path, monkeypatch):
    module_file = tmp_path / "fp_user_helpers.py"
    module_file.write_text("def parse(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    import fp_user_helpers

    try:
        namespace = cell(
            "import fp_user_helpers\n\ndef clean(x):\n    return fp_user_helpers.parse(x)\n"
        )
        direct, via_cell = task_print(fp_user_helpers.parse, 1), task_print(namespace["clean"], 1)
        module_file.write_text("def parse(x):\n    return x + 1000\n")
        importlib.invalidate_caches()
        importlib.reload(fp_user_helpers)
        assert changed(direct, task_print(fp_user_helpers.parse, 1)) == "the function parse changed"
        assert changed(via_cell, task_print(namespace["clean"], 1)) == (
            "helper fp_user_helpers.parse changed"
        )
    finally:
        sys.modules.pop("fp_user_helpers", None)


def test_an_edited_class_method_and_bound_state_count():
    source = """
        class Scaler:
            def __init__(self, k):
                self.k = k

            def scale(self, x):
                return x * self.k {extra}

        def run(x):
            return Scaler(2).scale(x)
    """
    old = cell(source.format(extra=""))
    new = cell(source.format(extra="+ 1"))
    assert changed(task_print(old["run"], 1), task_print(new["run"], 1)) == (
        "helper Scaler.scale changed"
    )
    bound_old = task_print(old["Scaler"](2).scale, 1)
    explained = changed(bound_old, task_print(new["Scaler"](2).scale, 1))
    assert explained == "the function Scaler.scale changed (and 1 more: bound self changed)"
    assert changed(bound_old, task_print(old["Scaler"](3).scale, 1)) == "bound self changed"


def test_mutual_recursion_terminates_and_covers_both_functions():
    source = """
        def even(n):
            return True if n == 0 else odd(n - 1)

        def odd(n):
            return False if n == 0 else {body}
    """
    old = task_print(cell(source.format(body="even(n - 1)"))["even"], 4)
    new = task_print(cell(source.format(body="not odd(n - 1)"))["even"], 4)
    # odd no longer reads the global even: said too
    assert changed(old, new) == "helper odd changed (and 1 more: global even is no longer used)"


# -- documented no-change edits keep the digest ----------------------------------------------


def test_comments_blank_lines_and_line_shifts_keep_the_digest():
    plain = "THRESHOLD = 2\n\ndef clean(x):\n    return x * THRESHOLD\n"
    shifted = (
        "# a comment\n\n\n\nTHRESHOLD = 2  # tuned\n\n\n"
        "def clean(x):\n    # explain\n\n    return (x *\n            THRESHOLD)\n"
    )
    first = task_print(cell(plain)["clean"], 1)
    assert task_print(cell(shifted)["clean"], 1).digest == first.digest


def test_rerunning_the_defining_cell_keeps_the_digest():
    source = """
        import functools
        SCALE = {"a": 2, "b": frozenset({"x", "y"})}

        def helper(x):
            return x * SCALE["a"]

        def clean(x, sep=","):
            return helper(x) + len(sep)

        part = functools.partial(clean, sep=";")
    """
    first, second = cell(source), cell(source)
    assert first["clean"] is not second["clean"]
    for name in ("clean", "part"):
        assert task_print(first[name], 1).digest == task_print(second[name], 1).digest


SUBPROCESS_SCRIPT = """
import textwrap
import numpy as np
from notebook_sched.cache.fingerprint import graph_fingerprints
source = '''
TAGS = {"alpha", "beta", "gamma"}
def clean(x, opts={"k": frozenset({"a", "b"})}):
    return sorted(TAGS)[0] + str(x) + str(len({"p", "q"}))
'''
namespace = {"__name__": "__main__"}
exec(compile(source, "<cell>", "exec"), namespace)
graph = {"a": (namespace["clean"], {"s", "t", "u"}), "b": (np.sum, np.arange(10), "a")}
prints = graph_fingerprints(graph, ["b"])
print(prints["a"].digest.hex(), prints["b"].digest.hex())
"""


def test_the_digest_is_the_same_in_another_process_with_another_hash_seed():
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", SUBPROCESS_SCRIPT],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        outputs.add(done.stdout.strip())
    namespace: dict = {}
    source = SUBPROCESS_SCRIPT.replace("print(", "result = (")
    exec(compile(source, "<s>", "exec", dont_inherit=True), namespace)
    assert len(outputs) == 1
    assert outputs == {" ".join(namespace["result"])}


def test_key_names_do_not_matter_and_identity_ignores_the_random_part():
    first = ns.delayed(_inc)(ns.delayed(_inc)(1))
    second = ns.delayed(_inc)(ns.delayed(_inc)(1))
    assert first.key != second.key
    prints_1 = graph_fingerprints(first.__dask_graph__(), [first.key])
    prints_2 = graph_fingerprints(second.__dask_graph__(), [second.key])
    by_identity_1 = {p.identity: p.digest for p in prints_1.values()}
    by_identity_2 = {p.identity: p.digest for p in prints_2.values()}
    assert by_identity_1 == by_identity_2
    assert sorted(by_identity_1) == ["_inc|_inc", "_inc|_inc#2"]


# -- uncacheable values: never guessed, always a reason --------------------------------------


class _Random:
    def __reduce__(self):
        return _Random, (), {"nonce": os.urandom(8)}


class _HoldsLock:
    def __init__(self):
        self.lock = threading.Lock()


def _generator():
    yield 1


@pytest.mark.parametrize(
    "make, expected",
    [
        (threading.Lock, "argument 1 is a lock"),
        (threading.RLock, "argument 1 is a lock"),
        (_generator, "argument 1 is a generator"),
        (_Random, "argument 1 is a _Random whose pickle is not deterministic"),
        (_HoldsLock, "argument 1 is a _HoldsLock holding a lock"),
        (threading.Thread, "argument 1 is a thread"),
    ],
)
def test_unsafe_arguments_make_the_task_uncacheable_with_a_reason(make, expected):
    printed = task_print(print, make())
    assert printed.digest is None
    assert printed.reason == expected
    assert explain(None, printed) == f"not cacheable: {expected}"


def test_sockets_and_files_are_uncacheable(tmp_path):
    with socket.socket() as sock:
        assert task_print(print, sock).reason == "argument 1 is a socket"
    with open(tmp_path / "f.txt", "w") as handle:
        assert task_print(print, 1, handle).reason == "argument 2 is a file object"


def test_a_global_lock_or_user_module_makes_the_function_uncacheable():
    namespace = cell(
        """
        import threading
        LOCK = threading.Lock()

        def locked(x):
            with LOCK:
                return x
        """
    )
    assert task_print(namespace["locked"], 1).reason == "global LOCK is a lock"
    mod = type(sys)("fp_fake_user_module")
    assert task_print(print, mod).reason.startswith("argument 1 is the module fp_fake_user_module")


def test_tasks_downstream_of_an_uncacheable_one_are_uncacheable():
    def inc(x):
        return x + 1

    graph = {"a": (print, threading.Lock()), "b": (inc, "a"), "c": (inc, "b")}
    prints = graph_fingerprints(graph, ["c"])
    assert prints["b"].reason == "depends on 'a', which is uncacheable: argument 1 is a lock"
    assert prints["c"].reason == (
        "depends on 'b', which is uncacheable (upstream, 'a': argument 1 is a lock)"
    )


def test_missing_keys_and_cycles_give_uncacheable_prints_not_errors():
    def inc(x):
        return x + 1

    prints = graph_fingerprints({"a": (inc, "b"), "b": (inc, "a"), "c": 1}, ["a", "zzz", "c"])
    assert prints["zzz"].reason == "it is not in the graph"
    assert "cycle" in prints["a"].reason or "cycle" in prints["b"].reason
    assert prints["c"].digest is not None


# -- scale ----------------------------------------------------------------------------------


def _chain(n: int) -> dict:
    graph: dict = {0: (_inc, -1)}
    for i in range(1, n + 1):
        graph[i] = (_inc, i - 1)
    return graph


def _cpu_seconds(graph: dict, key) -> float:
    best = float("inf")
    for _ in range(2):
        start = time.process_time()
        graph_fingerprints(graph, [key])
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.timeout(120)
def test_a_long_chain_needs_no_recursion_and_linear_time():
    """200,000 links: 200x Python's recursion limit and deeper than a C stack allows
    for recursive walks; and four times the chain costs about four times the time
    (a quadratic walk would cost 16x; the bound allows for a loaded machine)."""
    graph = _chain(200_000)
    prints = graph_fingerprints(graph, [200_000])
    assert len(prints) == 200_001
    assert prints[200_000].digest is not None
    assert explain(None, prints[200_000]) == "not seen before"
    other = dict(graph)
    other[0] = (_inc, -2)  # the first link's argument changes the last link's digest
    assert graph_fingerprints(other, [200_000])[200_000].digest != prints[200_000].digest
    short, long = _chain(20_000), _chain(80_000)
    ratio = _cpu_seconds(long, 80_000) / _cpu_seconds(short, 20_000)
    assert ratio < 9, f"4x the chain cost {ratio:.1f}x the CPU time: not linear"


def test_deeply_nested_arguments_need_no_recursion():
    nested: list = [1]
    for _ in range(5000):
        nested = [nested]
    assert task_print(len, nested).digest is not None
    graph = {"x": 1, "t": (len, [[["x"]]] * 2)}
    assert graph_fingerprints(graph, ["t"])["t"].parts[-1][0] == "dependency 'x'"


# -- Dask graphs ----------------------------------------------------------------------------


def _dask_prints(collection) -> dict:
    """identity -> digest of the graph Dask hands a scheduler (optimised, fused)."""
    seen = {}

    def capture(dsk, keys, **kwargs):
        seen["graph"], seen["keys"] = dict(ns.graph.to_mapping(dsk)), keys
        return ns.get(dsk, keys, scheduler="sync")

    dask.compute(collection, scheduler=capture)
    prints = graph_fingerprints(seen["graph"], flatten_keys(seen["keys"]))
    return {p.identity: p.digest for p in prints.values()}


def test_a_dask_array_fingerprints_the_same_across_two_builds_and_sees_its_source():
    source = np.arange(100.0)

    def build(offset=1):
        x = da.from_array(source, chunks=25)
        return ((x + offset) * 2).sum()

    first, second = _dask_prints(build()), _dask_prints(build())
    assert len(first) > 8 and None not in first.values()
    assert first == second  # Dask's random finalize key and fused subgraphs included
    source[3] = -5.0
    third = _dask_prints(build())
    assert not set(third.values()) & set(first.values())
    assert _dask_prints(build(offset=2)) != third


def test_dask_delayed_pure_is_cached_and_pure_false_is_not():
    def inc(x, by=1):
        return x + by

    def build(pure):
        return dask.delayed(inc, pure=pure)(dask.delayed(inc, pure=pure)(1), by=2)

    first, second = _dask_prints(build(True)), _dask_prints(build(True))
    assert first == second and None not in first.values()
    impure = build(False)
    prints = graph_fingerprints(dict(impure.__dask_graph__()), [impure.key])
    assert "pure=False" in prints[impure.key].reason


# -- opt-outs -------------------------------------------------------------------------------


def test_delayed_cache_false_opts_out_and_still_computes():
    calls = []

    @ns.delayed(cache=False)
    def stamp(x):
        calls.append(x)
        return x * 10

    value = ns.delayed(_inc)(stamp(4))
    prints = graph_fingerprints(value.__dask_graph__(), [value.key])
    (inner,) = [p for k, p in prints.items() if k != value.key]
    assert inner.reason == "its function opted out of the cache (cache=False)"
    assert inner.identity == "stamp|stamp"
    assert prints[value.key].reason.startswith("depends on 'stamp', which is uncacheable")
    assert value.compute(scheduler="sync") == 41 and calls == [4]


def test_delayed_pure_false_opts_out_like_cache_false():
    calls = []

    @ns.delayed(pure=False)
    def stamp(x):
        calls.append(x)
        return x * 10

    value = ns.delayed(_inc)(stamp(4))
    prints = graph_fingerprints(value.__dask_graph__(), [value.key])
    ((inner_key, inner),) = [(k, p) for k, p in prints.items() if k != value.key]
    assert inner.reason == "its function opted out of the cache (cache=False)"
    assert value.compute(scheduler="sync", cache=True) == 41
    assert value.compute(scheduler="sync", cache=True) == 41 and calls == [4, 4]
    line = ns.cache_info().explain(inner_key)
    assert line == f"{inner_key!r}: uncacheable: its function opted out of the cache (cache=False)"
    pure = ns.delayed(_inc, pure=True)(1)
    assert graph_fingerprints(pure.__dask_graph__(), [pure.key])[pure.key].digest is not None


def test_the_marker_attribute_and_the_opt_out_predicate():
    def now(x):
        return x

    assert task_print(now, 1).digest is not None
    now.__notebook_sched_cache__ = False
    assert task_print(now, 1).reason == "its function opted out of the cache (cache=False)"
    prints = graph_fingerprints({"a": (_inc, 1)}, ["a"], opt_out=lambda k, v: "asked")
    assert prints["a"].reason == "asked"


# -- explain --------------------------------------------------------------------------------


def test_explain_sentences():
    a = TaskPrint(b"1" * 16, None, (("function clean", b"f"), ("argument 1", b"a")), "clean|x")
    assert explain(None, a) == "not seen before"
    assert explain(a, a).startswith("unchanged")
    b = a._replace(digest=b"2" * 16, parts=(("function clean", b"f"), ("argument 1", b"b")))
    assert explain(a, b) == "argument 1 changed"
    c = b._replace(parts=(("function other", b"f"), ("argument 1", b"a")))
    assert explain(a, c) == "the task now calls other instead of clean"
    d = b._replace(parts=(*a.parts, ("global X", b"x"), ("helper h", b"h")))
    assert explain(a, d) == "global X is new (and 1 more: helper h is new)"
    assert explain(d, a) == ("global X is no longer used (and 1 more: helper h is no longer used)")
    dead = TaskPrint(None, "argument 2 is a socket", (), "f|x")
    assert explain(a, dead) == "not cacheable: argument 2 is a socket"
    assert explain(dead, a).startswith("not cacheable before (argument 2 is a socket)")


def test_apply_tasks_show_the_users_function_and_keywords():
    def load(path, sep=","):
        return path + sep

    old = ns.delayed(load)("a.csv", sep=";")
    new = ns.delayed(load)("a.csv", sep="|")
    old_print = graph_fingerprints(old.__dask_graph__(), [old.key])[old.key]
    new_print = graph_fingerprints(new.__dask_graph__(), [new.key])[new.key]
    assert old_print.parts[0][0].endswith("load") and old_print.identity.endswith("|load")
    assert changed(old_print, new_print) == "keyword sep changed"


def test_installed_functions_count_by_name_and_package_version(monkeypatch):
    import json

    from notebook_sched.cache import installed

    old = task_print(json.dumps, 1)
    assert [label for label, _ in old.parts] == ["function dumps", "argument 1"]
    assert [label for label, _ in task_print(np.add, 1, 2).parts][0] == "function add"
    uses_numpy = cell("import numpy as np\n\ndef total(x):\n    return np.sum(x)\n")["total"]
    before = task_print(uses_numpy, 1)
    monkeypatch.setitem(installed._versions, "json", "python 9.9")  # an upgrade
    monkeypatch.setitem(installed._versions, "numpy", "numpy 99.0")
    assert changed(old, task_print(json.dumps, 1)) == "the function dumps changed"
    assert changed(before, task_print(uses_numpy, 1)) == "global np changed"


def test_callable_objects_count_by_class_and_state():
    namespace = cell(
        """
        class Scale:
            def __init__(self, k):
                self.k = k

            def __call__(self, x):
                return x * self.k
        """
    )
    old = task_print(namespace["Scale"](2), 1)
    assert changed(old, task_print(namespace["Scale"](3), 1)) == "callable object changed"


def test_common_values_fingerprint_the_same_twice_and_by_content():
    namespace = cell(
        """
        import dataclasses, enum, collections

        @dataclasses.dataclass
        class Config:
            name: str
            tags: list = dataclasses.field(default_factory=list)

        class Colour(enum.Enum):
            RED = 1

        Point = collections.namedtuple("Point", "x y")

        def make():
            import datetime, decimal, fractions, pathlib, re, uuid
            return [
                Config("a", ["x"]), Colour.RED, Point(1, 2),
                collections.defaultdict(list, a=[1]), collections.OrderedDict(b=2),
                datetime.datetime(2026, 1, 2, 3, 4), decimal.Decimal("1.10"),
                fractions.Fraction(1, 3), pathlib.Path("/tmp/x"), re.compile("a+"),
                uuid.UUID(int=5), np.dtype("f4"), np.float32(1.5), range(3), slice(1, 2),
                complex(1, 2), bytearray(b"ab"), memoryview(b"cd"), {1, "a"}, frozenset({2}),
            ]
        """
    )
    namespace["np"] = np
    values = namespace["make"]()
    first = [task_print(len, v) for v in values]
    second = [task_print(len, v) for v in values]
    again = [task_print(len, v) for v in namespace["make"]()]
    assert all(p.digest is not None for p in first), [p.reason for p in first]
    assert [p.digest for p in first] == [p.digest for p in second] == [p.digest for p in again]
    assert len({p.digest for p in first}) == len(values)
    edited = namespace["make"]()
    edited[0].tags.append("y")
    assert changed(first[0], task_print(len, edited[0])) == "argument 1 changed"


class _Hostile:
    def __getattr__(self, name):
        raise ValueError(f"no {name} here")

    def __reduce__(self):
        raise ValueError("refuses to be pickled")


def test_an_object_whose_own_code_fails_makes_the_task_uncacheable_not_the_run_fail():
    printed = task_print(len, _Hostile())
    assert printed.digest is None
    assert "ValueError" in printed.reason  # whichever of its methods failed first


def test_what_is_upstream_of_an_uncacheable_task_is_still_fingerprinted():
    stamp = ns.delayed(_inc, cache=False)
    value = ns.delayed(_inc)(stamp([ns.delayed(_inc)(1), 2]))
    graph = value.__dask_graph__()
    prints = graph_fingerprints(graph, [value.key])
    assert set(prints) == set(graph)
    inner = next(key for key, task in graph.items() if task == (_inc, 1))
    assert prints[inner].digest is not None  # below the opted-out task, and cacheable
    assert prints[value.key].reason.startswith("depends on '_inc', which is uncacheable")
    lock_graph = {"a": (_inc, 1), "b": (print, "a", threading.Lock()), "c": (_inc, "b")}
    prints = graph_fingerprints(lock_graph, ["c"])
    assert prints["a"].digest is not None and prints["b"].reason == "argument 2 is a lock"
