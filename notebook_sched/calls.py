"""How a task calls its function, and the name a function gives its tasks.

Two helpers that graphs built by ``lazy.py`` (``delayed``) carry and that the layers
above read back, so they live at the bottom, beside the graph spec:

* :func:`apply` is the task function of a call with keyword arguments: Dask's spec
  has only positional arguments, so ``f(x, k=1)`` is the task ``(apply, f, [x],
  {"k": 1})``.  A worker process that unpickles such a task imports only this module.
* :func:`funcname` is the name part of a task key for a function (as Dask's
  ``funcname``): the failure report shows a task as ``name(args)`` with it.

Pure: imports nothing from the package.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any

__all__ = ["apply", "funcname"]

NAME_LIMIT = 50  # characters of a function's name kept in a key


def apply(func: Callable, args: list, kwargs: dict) -> Any:
    """``func(*args, **kwargs)``: the task function of a call with keywords."""
    return func(*args, **kwargs)


def funcname(func: Any) -> str:
    """The name part of a task key for ``func``, as Dask's ``funcname``.

    Functions, builtins, classes and methods by ``__name__``; partials by the function
    they wrap; ``methodcaller`` by its method; other callables by their class.
    """
    while isinstance(func, functools.partial):
        func = func.func
    if isinstance(func, operator.methodcaller):
        return func.__reduce__()[1][0][:NAME_LIMIT]  # (methodcaller, (name, *args))
    name = getattr(func, "__name__", None)
    if not isinstance(name, str) or not name:
        name = type(func).__name__
    return "lambda" if name == "<lambda>" else name[:NAME_LIMIT]
