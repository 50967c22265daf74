"""Property test: on random graphs every backend answers what Dask's ``get_sync`` answers.

The graphs mix every key type Dask accepts and some it does not name (str, int,
float, bool, tuples, bytes, None), references written as the key itself or as a
Dask ``TaskRef``, aliases, nested tasks, lists, literal tuples and sets that hold
keys, shared inputs and failing tasks.  For each graph the result (or the exception
type) of ``dask.local.get_sync`` is the expected one; ``compile_graph``'s fast path
and ``graph._parse`` must agree, which this checks because the same rule is reached
through both (flat calls take the fast path, everything else ``_parse``).

One documented difference is accepted: a top-level data tuple whose head is plain
data that is not a key, followed by keys (``(6, "a")``: usually ``(f(x), "a")``
written for ``(f, x, "a")``), is refused with a GraphError where Dask returns data.

``make test`` runs a bounded number of examples; ``make fuzz`` (environment
variable ``NOTEBOOK_SCHED_FUZZ=1``) runs many more.
"""

from __future__ import annotations

import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import notebook_sched as ns  # noqa: E402
from notebook_sched.graph import GraphError, names_key  # noqa: E402
from notebook_sched.graph_walk import needs_walk  # noqa: E402

FUZZ = os.environ.get("NOTEBOOK_SCHED_FUZZ") == "1"
settings.register_profile(
    "bounded",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROFILE = "fuzz" if FUZZ else "bounded"
pytestmark = [pytest.mark.timeout(3600 if FUZZ else 120), pytest.mark.usefixtures("no_leaks")]


def ident(*args):
    return args


def listed(*args):
    return list(args)


def fail(*args):
    raise ValueError("fail was asked to fail")


def count(*args):
    return len(args)


FUNCS = [ident, listed, count, fail]

# Keys: one of each kind, so every type meets every other; literals (drawn from other
# ranges) never equal a key.  False collides with 0 and True with 1 (as in Dask):
# the first drawn wins.
KEY_POOL = ["a", "xy", 0, 3, 2.5, 7.25, True, False, ("t", 0), ("u", ("a", 1)), b"k", None]
LITERALS = st.one_of(
    st.integers(1000, 1100),
    st.floats(1000.5, 1100, allow_nan=False),
    st.text("LMNOP", max_size=3).map(lambda s: "lit-" + s),
    st.binary(max_size=2).map(lambda b: b"lit" + b),
    st.none(),
)


@st.composite
def graphs(draw):
    keys: list = []
    pool = draw(st.permutations(KEY_POOL))
    for key in pool[: draw(st.integers(2, 8))]:
        if hash(key) not in {hash(k) for k in keys}:
            keys.append(key)
    from dask._task_spec import TaskRef

    dsk: dict = {}
    for n, key in enumerate(keys):
        earlier = keys[:n]

        def leaf(draw=draw, earlier=earlier):
            if earlier and draw(st.integers(0, 2)):
                target = draw(st.sampled_from(earlier))
                # (Dask reads TaskRef(None) as an alias of itself: not generated.)
                use_ref = target is not None and draw(st.integers(0, 5)) == 0
                return TaskRef(target) if use_ref else target
            return draw(LITERALS)

        def arg(depth):
            kind = draw(st.integers(0, 9 if depth < 3 else 3))
            if kind <= 3:
                return leaf()
            if kind <= 5:
                func = draw(st.sampled_from(FUNCS if draw(st.integers(0, 6)) == 0 else FUNCS[:3]))
                return (func, *[arg(depth + 1) for _ in range(draw(st.integers(0, 3)))])
            if kind == 6:
                return [arg(depth + 1) for _ in range(draw(st.integers(0, 3)))]
            if kind == 7:  # a literal tuple: its head is data, never callable
                return tuple(arg(depth + 1) for _ in range(draw(st.integers(1, 3))))
            if kind == 8:
                return {leaf() for _ in range(draw(st.integers(0, 2)))}
            return frozenset(leaf() for _ in range(draw(st.integers(0, 2))))

        dsk[key] = arg(0)
    requested = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=4))
    if draw(st.booleans()):
        requested = [requested[: len(requested) // 2], requested[len(requested) // 2 :]]
    return dsk, requested


def outcome(get, dsk, keys):
    try:
        return "ok", get(dsk, keys)
    except Exception as exc:
        return "raised", exc


def is_documented_difference(dsk: dict, exc: BaseException) -> bool:
    """Our (f(x), "a") error, on a graph that really has a data tuple of that shape."""
    if not isinstance(exc, GraphError) or "function was called" not in str(exc):
        return False
    return any(
        type(v) is tuple
        and v
        and not callable(v[0])
        and not names_key(v[0], dsk)
        and not needs_walk(v[0], dsk)
        and any(names_key(item, dsk) for item in v[1:])
        for v in dsk.values()
    )


def flat(keys):
    for item in keys:
        if isinstance(item, list):
            yield from flat(item)
        else:
            yield item


def check(dsk, keys, scheduler):
    from dask.local import get_sync

    expected = outcome(get_sync, dsk, keys)
    got = outcome(lambda d, k: ns.get(d, k, scheduler=scheduler), dsk, keys)
    if got[0] == "raised" and is_documented_difference(dsk, got[1]):
        return
    if expected[0] == "ok":
        assert got == expected, f"{scheduler}: {dsk!r} {keys!r}"
    else:
        assert got[0] == "raised", f"{scheduler}: {dsk!r} {keys!r} gave {got[1]!r}"
        # Several failing tasks: a parallel backend may meet any of them first.
        possible = {type(expected[1])}
        for key in flat(keys):
            alone = outcome(get_sync, dsk, [key])
            if alone[0] == "raised":
                possible.add(type(alone[1]))
        assert type(got[1]) in possible, (
            f"{scheduler}: {dsk!r} {keys!r}: {got[1]!r} vs Dask's {expected[1]!r}"
        )


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes", "auto", "distributed"])
def test_backends_agree_with_dask(scheduler):
    @settings(settings.get_profile(PROFILE))
    @given(graphs())
    def run(case):
        check(*case, scheduler)

    run()


def test_fast_path_and_parse_agree_on_flat_calls():
    """Flat calls take the fast path; wrapped in a list they go through ``_parse``."""
    from notebook_sched.graph import compile_graph

    @settings(settings.get_profile(PROFILE))
    @given(graphs())
    def run(case):
        dsk, _ = case
        for key, value in dsk.items():
            if not (type(value) is tuple and value and callable(value[0])):
                continue
            fast = outcome(compile_graph, dsk, [key])
            slow = outcome(compile_graph, {**dsk, "__probe__": [value]}, ["__probe__"])
            if fast[0] == "raised" or slow[0] == "raised":  # a bad value elsewhere
                assert type(fast[1]) is type(slow[1]), (fast, slow)
                continue
            fast_deps = {fast[1].keys[d] for d in fast[1].deps[0]}
            slow_deps = {slow[1].keys[d] for d in slow[1].deps[0]}
            assert fast_deps == slow_deps, (value, fast_deps, slow_deps)

    run()
