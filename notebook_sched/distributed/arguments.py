"""Arguments of ``submit``: futures inside them become dependencies.

``build_call(fn, args, kwargs)`` returns ``(func, args, slots)`` for a CALL spec whose
``slots`` ``((position, dependency key), ...)`` the scheduler fills with the values of
those futures on the worker.  Futures given directly as positional arguments take
their position; futures nested in lists, tuples, sets or dicts (or keyword
arguments) are replaced by placeholders in a template that ``_call_nested`` fills on
the worker.  Other arguments are passed as they are (a tuple stays a tuple, it is not
read as a task).

One walk serves every use: :func:`_replace` rebuilds a nested value (lists, tuples,
sets, frozensets, dict values) with each leaf that matches replaced, so building the
template, filling it on the worker, collecting the futures of ``gather`` and putting
their values back all agree on which containers are looked into.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .future import Future

__all__ = ["build_call", "collect_futures", "rebuild"]

_CONTAINERS = (list, tuple, set, frozenset)


def _is_future(value: Any) -> bool:
    return isinstance(value, Future)


class _Ref:
    """Placeholder for the n-th future inside a nested argument."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n


def _is_ref(value: Any) -> bool:
    return type(value) is _Ref


def _replace(value: Any, match: Callable[[Any], bool], replace: Callable[[Any], Any]) -> Any:
    """A copy of ``value`` with every leaf for which ``match`` is true replaced by
    ``replace(leaf)``, visited left to right."""
    if match(value):
        return replace(value)
    typ = type(value)
    if typ in _CONTAINERS:
        return typ([_replace(item, match, replace) for item in value])
    if typ is dict:
        return {k: _replace(v, match, replace) for k, v in value.items()}
    return value


def build_call(fn: Callable, args: tuple, kwargs: dict) -> tuple:
    """``(func, args, ((position, dependency key), ...))`` for a CALL spec."""
    # Nested: some future is not itself a positional argument.
    nested = len(_futures((args, kwargs))) > sum(map(_is_future, args))
    if not nested:
        slots = tuple((n, a.key) for n, a in enumerate(args) if _is_future(a))
        call_args = tuple(None if _is_future(a) else a for a in args)
        if kwargs:
            return _call_with_kwargs, (fn, kwargs, *call_args), tuple((n + 2, k) for n, k in slots)
        return fn, call_args, slots
    keys: list = []

    def placeholder(future: Future) -> _Ref:
        keys.append(future.key)
        return _Ref(len(keys) - 1)

    template = _replace((args, kwargs), _is_future, placeholder)
    slots = tuple((n + 2, key) for n, key in enumerate(keys))
    return _call_nested, (fn, template, *([None] * len(keys))), slots


def _call_with_kwargs(fn: Callable, kwargs: dict, *args: Any) -> Any:
    return fn(*args, **kwargs)


def _call_nested(fn: Callable, template: Any, *values: Any) -> Any:
    args, kwargs = _replace(template, _is_ref, lambda ref: values[ref.n])
    return fn(*args, **kwargs)


def _futures(value: Any) -> list:
    found: list = []
    _replace(value, _is_future, found.append)
    return found


def collect_futures(value: Any, found: list) -> None:
    """Append the futures inside ``value`` to ``found`` (left to right)."""
    found.extend(_futures(value))


def rebuild(value: Any, by_key: dict) -> Any:
    """``value`` with each future replaced by ``by_key[future.key]``."""
    return _replace(value, _is_future, lambda future: by_key[future.key])
