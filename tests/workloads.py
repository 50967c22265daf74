"""Task functions several test modules run: one copy of each kind of work.

They live in an importable module, so cloudpickle sends them to process and cluster
workers by reference and a worker imports this module (standard library only: cheap,
so the first task a worker gets is not slowed by imports).  Each says how long it runs
and what it does to the GIL, since that is what the tests of advice, routing and
interrupts depend on; sizes are arguments where modules need different ones.

- :func:`parse`: pure Python, holds the GIL (~10 ms with the default ``n``).
- :func:`fetch`: waits (``time.sleep``), leaves the GIL free.
- :func:`python_loop`: pure Python for ``seconds``, appending to :data:`progress` as it
  goes, so a test can see whether it still runs after an interrupt.
- :func:`busy`: pure Python for ``seconds`` that never sleeps; returns its pid.
- :func:`load_clean_total`: the graph ``load-i -> clean-i -> total`` (two prefixes).
"""

from __future__ import annotations

import os
import time

progress: list = []  # python_loop's ticks, in the process that runs it


def parse(i, n=300_000):
    """Pure Python: holds the GIL (~10 ms for the default ``n``)."""
    total = 0
    for k in range(n):
        total += k ^ i
    return total


def fetch(i, seconds=0.01):
    """Waits: sleeps ``seconds`` with the GIL free."""
    time.sleep(seconds)
    return i


def python_loop(i, seconds=3.0):
    """Pure-Python work: stoppable between bytecodes."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        if n % 10_000 == 0:
            progress.append(i)
    return i


def busy(seconds):
    """A pure-Python loop that never sleeps (so a cancel must interrupt the bytecode);
    returns the pid of the process that ran it."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return os.getpid()


def load_clean_total(task, n):
    """``load-i = task(i)``, ``clean-i = task(load-i)`` for ``i < n``, and ``total``, the
    sum of the cleans: ``2 n + 1`` tasks under the prefixes load, clean and total."""
    dsk = {f"load-{i}": (task, i) for i in range(n)}
    dsk.update({f"clean-{i}": (task, f"load-{i}") for i in range(n)})
    dsk["total"] = (sum, [f"clean-{i}" for i in range(n)])
    return dsk
