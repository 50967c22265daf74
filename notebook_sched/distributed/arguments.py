"""Arguments of ``submit``: futures inside them become dependencies.

``build_call(fn, args, kwargs)`` returns ``(func, args, slots)`` for a CALL spec whose
``slots`` ``((position, dependency key), ...)`` the scheduler fills with the values of
those futures on the worker.  Futures given directly as positional arguments take
their position; futures nested in lists, tuples, sets or dicts (or keyword
arguments) are replaced by placeholders in a template that ``_call_nested`` fills on
the worker.  Other arguments are passed as they are (a tuple stays a tuple, it is not
read as a task).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["build_call", "collect_futures", "rebuild"]


FUTURE_TYPE: type = type(None)  # set to client.Future when client.py is imported


def _is_future(value: Any) -> bool:
    return isinstance(value, FUTURE_TYPE)


class _Ref:
    """Placeholder for the n-th future inside a nested argument."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n


def build_call(fn: Callable, args: tuple, kwargs: dict) -> tuple:
    """``(func, args, ((position, dependency key), ...))`` for a CALL spec."""
    nested = any(_holds_future(v) for v in kwargs.values()) or any(
        not _is_future(a) and _holds_future(a) for a in args
    )
    if not nested:
        slots = tuple((n, a.key) for n, a in enumerate(args) if _is_future(a))
        call_args = tuple(None if _is_future(a) else a for a in args)
        if kwargs:
            return _call_with_kwargs, (fn, kwargs, *call_args), tuple((n + 2, k) for n, k in slots)
        return fn, call_args, slots
    found: list = []
    template = _template((args, kwargs), found)
    slots = tuple((n + 2, key) for n, key in enumerate(found))
    return _call_nested, (fn, template, *([None] * len(found))), slots


def _call_with_kwargs(fn: Callable, kwargs: dict, *args: Any) -> Any:
    return fn(*args, **kwargs)


def _call_nested(fn: Callable, template: Any, *values: Any) -> Any:
    args, kwargs = _fill(template, values)
    return fn(*args, **kwargs)


def _holds_future(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if _is_future(item):
            return True
        if type(item) in (list, tuple, set, frozenset):
            stack.extend(item)
        elif type(item) is dict:
            stack.extend(item.values())
    return False


def _template(value: Any, found: list) -> Any:
    """``value`` with futures replaced by placeholders (their keys appended to ``found``)."""
    if _is_future(value):
        found.append(value.key)
        return _Ref(len(found) - 1)
    typ = type(value)
    if typ in (list, tuple, set, frozenset):
        return typ(_template(item, found) for item in value)
    if typ is dict:
        return {k: _template(v, found) for k, v in value.items()}
    return value


def _fill(template: Any, values: tuple) -> Any:
    if type(template) is _Ref:
        return values[template.n]
    typ = type(template)
    if typ in (list, tuple, set, frozenset):
        return typ(_fill(item, values) for item in template)
    if typ is dict:
        return {k: _fill(v, values) for k, v in template.items()}
    return template


def collect_futures(value: Any, found: list) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if _is_future(item):
            found.append(item)
        elif type(item) in (list, tuple, set):
            stack.extend(item)
        elif type(item) is dict:
            stack.extend(item.values())


def rebuild(value: Any, by_key: dict) -> Any:
    if _is_future(value):
        return by_key[value.key]
    typ = type(value)
    if typ in (list, tuple, set):
        return typ(rebuild(item, by_key) for item in value)
    if typ is dict:
        return {k: rebuild(v, by_key) for k, v in value.items()}
    return value
