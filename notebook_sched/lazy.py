"""Lazy values: a small ``delayed`` API that builds graphs by calling functions,
without Dask.  (The module is not called ``delayed``: a submodule of that name would
shadow the function ``notebook_sched.delayed`` once imported.)

::

    @delayed
    def inc(x):
        return x + 1

    total = delayed(sum)([inc(i) for i in range(10)])
    total.compute(scheduler="threads")      # 55
    total.key, total.__dask_graph__()       # the graph, as a plain dict

A :class:`Delayed` holds only its own task and references to the Delayed objects it
reads, so building a long chain is linear; the full graph is collected by an
iterative walk when it is needed.  Keys are ``"<function name>-<random token>"``
(``dask_key_name=`` picks one).  Arguments may be Delayed objects or lists, tuples,
sets and dicts containing them; keyword arguments work too.  Attribute access,
indexing, calls and arithmetic on a Delayed build new tasks; private names (``_x``,
IPython's ``_repr_*_`` probes) are AttributeErrors, not tasks.  ``persist()`` computes
and keeps the result as data; ``visualize()`` draws the graph (the drawing is
registered by the diagnostics layer, ``set_visualizer``).
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable, Hashable
from typing import Any

from .api import get
from .calls import apply, funcname
from .graph import first

__all__ = ["Delayed", "delayed", "compute", "collect_graph", "set_visualizer"]


def _token() -> str:
    return uuid.uuid4().hex[:16]


class Delayed:
    """A lazy value: the result of one task of a graph."""

    __slots__ = ("_key", "_task", "_deps", "__weakref__")

    def __init__(self, key: Hashable, task: Any, deps: tuple = ()):
        self._key = key
        self._task = task
        self._deps = deps

    @property
    def key(self) -> Hashable:
        return self._key

    def __dask_graph__(self) -> dict:
        graph: dict = {}
        stack = [self]
        while stack:
            node = stack.pop()
            if node._key in graph:
                continue
            graph[node._key] = node._task
            stack.extend(node._deps)
        return graph

    def __dask_keys__(self) -> list:
        return [self._key]

    def __dask_tokenize__(self) -> Hashable:
        return self._key

    def __dask_postcompute__(self):
        return first, ()

    def compute(self, scheduler: Any = None, **options: Any) -> Any:
        """Compute this value (see :func:`notebook_sched.compute`)."""
        return compute(self, scheduler=scheduler, **options)[0]

    def __repr__(self) -> str:
        return f"Delayed({self._key!r})"

    def __hash__(self) -> int:
        return hash(self._key)

    def __bool__(self) -> bool:
        raise TypeError(
            f"The truth value of {self!r} is not known until it is computed; "
            f"call .compute() first, or move the condition into a delayed function."
        )

    def __iter__(self):
        raise TypeError(
            f"{self!r} cannot be iterated before it is computed; index it (x[0]) "
            f"or compute it first."
        )

    @property
    def dask(self) -> dict:
        """The graph, as Dask's ``Delayed.dask``."""
        return self.__dask_graph__()

    def persist(self, scheduler: Any = None, **options: Any) -> Delayed:
        """Compute now; a Delayed with the same key whose graph holds the result only."""
        value = self.compute(scheduler=scheduler, **options)
        return Delayed(self._key, _as_data(value))

    def visualize(self, filename: str | None = None, **options: Any) -> Any:
        """Draw this value's graph: graphviz when installed, else matplotlib.

        See :func:`notebook_sched.diagnostics.graph_plot.visualize` for the options.
        """
        if _visualizer is None:
            raise RuntimeError("no graph drawing is registered (notebook_sched.diagnostics)")
        return _visualizer(self, filename, **options)

    def __getattr__(self, name: str) -> Delayed:
        # Private and special names (IPython's _repr_*_ probes, pickle's hooks) and
        # Dask's names we do not implement are errors, not lazy attribute lookups.
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if name in _NOT_LAZY:
            raise AttributeError(
                f"Delayed objects of notebook_sched have no {name!r}. {_NOT_LAZY[name]}"
            )
        return _call(getattr, (self, name), {}, name=f"getattr-{name}")

    def __getitem__(self, index: Any) -> Delayed:
        return _call(operator.getitem, (self, index), {}, name="getitem")

    def __call__(self, *args: Any, **kwargs: Any) -> Delayed:
        return _call(apply, (self, list(args), kwargs), {}, name="call")


_NOT_LAZY = {
    "visualise": "Did you mean .visualize()?",
}
# Draws a graph: set by the diagnostics layer (diagnostics/graph_plot.py), which sits
# above this one, when it installs itself (the package root's first-use activation).
_visualizer: Callable[..., Any] | None = None


def set_visualizer(draw: Callable[..., Any] | None) -> None:
    global _visualizer
    _visualizer = draw


def _as_data(value: Any) -> Any:
    """``value`` as a graph value that is data whatever it looks like."""
    if type(value) in (str, bytes, tuple, list, dict, set, frozenset):
        return (_unwrap, _Literal(value))  # could read as a key, a task or hold keys
    return value


def _binary(op: Callable, reflected: bool = False):
    def method(self: Delayed, other: Any) -> Delayed:
        args = (other, self) if reflected else (self, other)
        return _call(op, args, {}, name=op.__name__)

    return method


def _unary(op: Callable):
    def method(self: Delayed) -> Delayed:
        return _call(op, (self,), {}, name=op.__name__)

    return method


# Operators: reflected ones too for arithmetic, not for comparisons; unary ones.
_ARITHMETIC = "add sub mul truediv floordiv mod pow matmul and or xor"
_COMPARISON = "lt le gt ge"
_UNARY = "neg pos abs invert"
for _name in _ARITHMETIC.split():
    _op = getattr(operator, _name if _name not in ("and", "or") else f"{_name}_")
    setattr(Delayed, f"__{_name}__", _binary(_op))
    setattr(Delayed, f"__r{_name}__", _binary(_op, reflected=True))
for _name in _COMPARISON.split():
    setattr(Delayed, f"__{_name}__", _binary(getattr(operator, _name)))
for _name in _UNARY.split():
    setattr(Delayed, f"__{_name}__", _unary(getattr(operator, _name)))


def _to_task(value: Any, deps: list) -> Any:
    """Replace Delayed objects inside ``value`` by their keys; collect them in ``deps``."""
    if isinstance(value, Delayed):
        deps.append(value)
        return value._key
    typ = type(value)
    if typ is list:
        return [_to_task(item, deps) for item in value]
    if typ in (tuple, set, frozenset):
        if _holds_delayed(value):
            return (typ, [_to_task(item, deps) for item in value])
        if typ is tuple and value and callable(value[0]):
            return (_unwrap, _Literal(value))  # data that looks like a task stays data
        return value
    if typ is dict:
        if not any(isinstance(v, Delayed) or _holds_delayed(v) for v in value.values()):
            return value
        return (dict, [[k, _to_task(v, deps)] for k, v in value.items()])
    return value


def _holds_delayed(value: Any) -> bool:
    if isinstance(value, Delayed):
        return True
    if type(value) in (list, tuple, set, frozenset):
        return any(_holds_delayed(item) for item in value)
    if type(value) is dict:
        return any(_holds_delayed(item) for item in value.values())
    return False


def _call(
    func: Callable, args: tuple, kwargs: dict, name: str | None = None, key: Hashable | None = None
) -> Delayed:
    deps: list = []
    task_args = [_to_task(arg, deps) for arg in args]
    if kwargs:
        task = (apply, func, task_args, _to_task(dict(kwargs), deps))
    else:
        task = (func, *task_args)
    if key is None:
        key = f"{name or funcname(func)}-{_token()}"
    return Delayed(key, task, tuple(deps))


class DelayedFunction:
    """A function whose calls build tasks instead of running."""

    __slots__ = ("func", "name", "__wrapped__")

    def __init__(self, func: Callable, name: str | None = None):
        self.func = func
        self.name = name
        self.__wrapped__ = func

    def __call__(self, *args: Any, dask_key_name: Hashable | None = None, **kwargs: Any) -> Delayed:
        return _call(self.func, args, kwargs, name=self.name, key=dask_key_name)

    def __repr__(self) -> str:
        return f"delayed({funcname(self.func)})"


def delayed(obj: Any = None, *, name: str | None = None, cache: bool = True, pure: bool = True):
    """Wrap a function (its calls become tasks) or a value (it becomes a task).

    Works as a decorator, with or without arguments: ``@delayed`` or
    ``@delayed(name="load")``.  ``cache=False`` keeps the function's results out of
    the result cache (for functions that read files, clocks or random state): its
    tasks run every time.  ``pure=False`` says the same in Dask's words (a function
    that is not pure must not be cached); keys stay random either way.
    """
    cache = cache and pure
    if obj is None:
        return lambda func: delayed(func, name=name, cache=cache)
    if isinstance(obj, Delayed):
        return obj
    if callable(obj):  # functions, classes, builtins, partials, callable objects
        if cache is False:
            from .cache.optout import NotCached

            wrapper = DelayedFunction(NotCached(obj), name or funcname(obj))
            wrapper.__wrapped__ = obj
            return wrapper
        return DelayedFunction(obj, name)
    deps: list = []
    task = _to_task(obj, deps)
    key = f"{name or type(obj).__name__}-{_token()}"
    return Delayed(key, task, tuple(deps))


class _Literal:
    """Hides a value from the graph walker (a tuple starting with a callable is data)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


def _unwrap(literal: _Literal) -> Any:
    return literal.value


def collect_graph(objs: tuple, traverse: bool = True):
    """Merge the graphs of everything computable in ``objs``.

    Returns ``(graph, keys, rebuild)``: ``rebuild(results)`` puts the computed values
    back in the shape of ``objs``.
    """
    graph: dict = {}
    keys: list = []

    def visit(obj: Any) -> Callable[[tuple], Any]:
        position = len(keys)
        if isinstance(obj, Delayed):
            graph.update(obj.__dask_graph__())
            keys.append(obj._key)
            return lambda results: results[position]
        if hasattr(obj, "__dask_graph__") and hasattr(obj, "__dask_keys__"):
            graph.update(obj.__dask_graph__())
            keys.append(obj.__dask_keys__())
            post, extra = obj.__dask_postcompute__()
            return lambda results: post(results[position], *extra)
        if traverse and type(obj) in (list, tuple, set) and _holds_delayed(obj):
            parts = [visit(item) for item in obj]
            typ = type(obj)
            return lambda results: typ(part(results) for part in parts)
        if traverse and type(obj) is dict and _holds_delayed(obj):
            parts = {k: visit(v) for k, v in obj.items()}
            return lambda results: {k: part(results) for k, part in parts.items()}
        return lambda results: obj

    finishers = [visit(obj) for obj in objs]

    def rebuild(results: tuple) -> tuple:
        return tuple(finish(results) for finish in finishers)

    return graph, keys, rebuild


def compute(*args: Any, scheduler: Any = None, traverse: bool = True, **options: Any) -> tuple:
    """Compute several delayed objects (or anything with ``__dask_graph__``) at once.

    Shared parts of their graphs run once.  Plain values pass through unchanged;
    lists, tuples and dicts of delayed objects are computed inside when ``traverse``.
    Returns a tuple with one result per argument.
    """
    graph, keys, rebuild = collect_graph(args, traverse=traverse)
    if not keys:
        return tuple(args)
    results = get(graph, keys, scheduler=scheduler, **options)
    return rebuild(results)
