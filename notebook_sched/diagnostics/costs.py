"""What moving data costs on this machine, for the advisor's model.

The advisor's model (``advice_model.py``) needs the cost per byte of sending a task's
inputs to a worker process and its result back: pickle, a pipe, unpickle.  That is
measured once per process by ``measure.transfer_cost`` (see there), the same number
the ``auto`` scheduler routes with, so routing and advice agree.

Per-task overheads come from this project's benchmarks (``benchmarks/overhead.py``:
2-4 µs a task on sync and threads, 3-6 µs on the warm process pool, batched); they
are far below the tasks any advice is about, so they are constants, not a measurement.
"""

from __future__ import annotations

import functools

from ..measure import per_byte_transfer, transfer_cost
from .advice_model import Costs

__all__ = ["measured_costs", "per_byte_transfer"]

PER_TASK = {"sync": 2e-6, "threads": 3e-6, "processes": 5e-6, "auto": 5e-6}


@functools.cache
def measured_costs() -> Costs:
    """This machine's :class:`Costs` (measured on first use, then cached)."""
    return Costs(per_task=dict(PER_TASK), per_byte=transfer_cost())
