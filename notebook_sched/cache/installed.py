"""Which code is the user's, and what installed code counts by.

The result cache prints the user's own code by content (``code_print``) and counts
installed code by name and version, never by content.  This module draws that line
and finds the versions:

* :func:`is_user_module`: ``__main__``, unknown modules and ``.py`` files outside the
  standard library and site-packages are the user's; ``notebook_sched`` itself,
  builtins and frozen modules are not.  Remembered per (name, file), so a module of
  the same name imported later from another place is judged again.
* :func:`library_token`: an installed callable or class is its module, qualified name
  and its top package's version (:func:`version_of`): Python's for the standard
  library and builtins, ``__version__``, the distribution named like the package, else
  the package file's modification time and size.  A namespace package (PEP 420: no
  ``__init__``, so no ``__file__``, its portions installed by several distributions)
  counts by every providing distribution's version; when no distribution provides it
  there is no version to trust, and its code is uncacheable with that reason.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from typing import Any

from .value_print import Uncacheable, digest_of

__all__ = ["display_name", "is_user_module", "library_token", "version_of"]


def display_name(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return name if isinstance(name, str) else type(obj).__qualname__


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    try:
        import site

        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    except (AttributeError, ImportError):  # a virtualenv's old site module
        pass
    return tuple(os.path.realpath(r) + os.sep for r in roots if r)


_ROOTS: tuple[str, ...] | None = None
_INSTALLED_NAMES = ("notebook_sched",)  # ours: by version, even from a source checkout
_module_is_user: dict[tuple[str, Any], bool] = {}
_versions: dict[str, Any] = {}  # top package -> version, or why there is none


def is_user_module(name: Any) -> bool:
    """True for ``__main__``, unknown modules and ``.py`` files outside the libraries.

    Remembered per (name, file): a module of the same name imported later from
    another place is judged again."""
    if not isinstance(name, str) or name == "__main__":
        return True
    module = sys.modules.get(name)
    if module is None:
        return True  # an exec'd namespace, or a module gone: print it by content
    path = getattr(module, "__file__", None)
    known = _module_is_user.get((name, path))
    if known is not None:
        return known
    global _ROOTS
    if _ROOTS is None:
        _ROOTS = _library_roots()
    top = name.partition(".")[0]
    if top in _INSTALLED_NAMES or not isinstance(path, str):
        user = False  # ours, builtin or frozen modules
    else:
        user = not os.path.realpath(path).startswith(_ROOTS)
    _module_is_user[(name, path)] = user
    return user


def version_of(module_name: str) -> str:
    """The version an installed module counts by, cheapest source first: Python's for
    the standard library and builtins, ``__version__``, the distribution named like the
    module, else the file's modification time and size (any reinstall or edit changes
    them).  A namespace package (no ``__file__``, portions from several distributions)
    counts by the versions of every distribution that provides it
    (:func:`_namespace_version`), or is uncacheable when none does.  Never a scan of
    every installed distribution for a regular package: that costs about a second in a
    fresh process, for no safer answer.  Remembered per process and top package."""
    top = module_name.partition(".")[0]
    known = _versions.get(top)
    if known is None:
        known = _versions[top] = _find_version(top)
    if isinstance(known, Uncacheable):
        raise known
    return known


def _find_version(top: str) -> str | Uncacheable:
    module = sys.modules.get(top)
    file = getattr(module, "__file__", None)
    if file is None and _is_namespace(module):
        return _namespace_version(top)
    attr = getattr(module, "__version__", None)
    if file is None or _in_standard_library(file):
        return f"python {sys.version}"  # builtin, frozen, or the standard library
    if isinstance(attr, str):
        return f"{top} {attr}"
    version = _distribution_version(top)
    if not version:
        stat = os.stat(file)
        version = f"{file} {stat.st_mtime_ns} {stat.st_size}"
    return version


def _is_namespace(module: Any) -> bool:
    """A PEP 420 namespace package: a package with no ``__init__`` file (its spec has
    no origin, or ``"namespace"``), unlike builtin and frozen modules."""
    spec = getattr(module, "__spec__", None)
    if spec is None or getattr(spec, "submodule_search_locations", None) is None:
        return False
    return getattr(spec, "origin", None) in (None, "namespace")


def _namespace_version(top: str) -> str | Uncacheable:
    """Every distribution that installs a portion of the namespace package ``top``,
    with its version, sorted: upgrading any of them changes the print (which may
    recompute tasks of another portion: never a stale result)."""
    from importlib import metadata

    try:
        names = sorted(set(metadata.packages_distributions().get(top, ())))
        found = [f"{name} {metadata.version(name)}" for name in names]
    except Exception as exc:  # a broken distribution: no version to trust
        return Uncacheable(
            f"code from the namespace package {top}, whose version cannot be read ({exc})"
        )
    if not found:
        return Uncacheable(
            f"code from the namespace package {top}, which no installed distribution "
            f"provides (no version to count it by)"
        )
    return f"namespace {top}: " + ", ".join(found)


def _in_standard_library(file: str) -> bool:
    paths = sysconfig.get_paths()
    roots = tuple(
        os.path.realpath(paths[k]) + os.sep for k in ("stdlib", "platstdlib") if k in paths
    )
    real = os.path.realpath(file)
    return real.startswith(roots) and "site-packages" not in real


def _distribution_version(top: str) -> str:
    from importlib import metadata

    try:
        return f"{top} {metadata.version(top)}"
    except Exception:  # no distribution of that name, or a broken one
        return ""


def library_token(obj: Any) -> bytes:
    """An installed callable or class: module, qualified name, package version."""
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str):
        owner = getattr(obj, "__objclass__", None) or type(obj)
        module = getattr(owner, "__module__", None) or "builtins"
    return digest_of(f"lib|{module}|{display_name(obj)}|{version_of(module)}".encode())
