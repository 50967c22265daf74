"""Plain-text descriptions of the settings, shared by ``%schedule`` and the picker.

Kept free of IPython and ipywidgets so the picker's text repr and the magic print
exactly the same thing.
"""

from __future__ import annotations

import os
from typing import Any

from .. import config, schedulers

__all__ = ["describe_settings", "describe_value", "backend_choices"]

_AUTO = {
    "num_workers": "auto (one per CPU: {cpus})",
    "progress": "auto (on in notebooks)",
}
_RERUN = {
    "auto": "auto (rerun remote failures here under IPython)",
    "always": "always",
    "never": "never (tasks have side effects)",
}


def describe_value(name: str, value: Any) -> str:
    """How setting ``name`` reads to a person."""
    if name == "rerun":
        return _RERUN.get(value, repr(value))
    if value is None and name in _AUTO:
        return _AUTO[name].format(cpus=os.cpu_count() or 1)
    if name == "progress":
        return "on" if value else "off"
    if name == "scheduler" and not isinstance(value, str):
        return f"{type(value).__name__} {value!r}"
    return str(value)


def backend_choices() -> str:
    """``sync (synchronous, single-threaded), threads (threading), ...``"""
    parts = []
    for name, aliases in schedulers.names().items():
        parts.append(f"{name} ({', '.join(aliases)})" if aliases else name)
    return ", ".join(parts)


def describe_settings() -> str:
    """A few lines: the current scheduler with its hint, workers, progress, rerun."""
    values = config.snapshot()
    scheduler = values["scheduler"]
    hint = schedulers.hint(scheduler) if isinstance(scheduler, str) else ""
    lines = [
        f"scheduler: {describe_value('scheduler', scheduler)}" + (f"  ({hint})" if hint else ""),
        f"workers:   {describe_value('num_workers', values['num_workers'])}",
        f"progress:  {describe_value('progress', values['progress'])}",
        f"rerun:     {describe_value('rerun', values['rerun'])}",
    ]
    if values.get("cache", False) is not False:
        lines.append(
            f"cache:     {values['cache']} (notebook_sched.cache_info() shows the last run)"
        )
    if values.get("pool") is not None:
        lines.append(f"pool:      {values['pool']!r}")
    lines.append(f"backends:  {backend_choices()}")
    return "\n".join(lines)
