"""The cache's planner: hits substituted before the run, results stored as they finish.

For a run whose ``cache`` option is on, the package root's plan hook calls
:func:`plan_hook`, which returns a :class:`CachePlanner` for that run (see
``notebook_sched/plan.py`` for the seam's three steps):

``plan(graph, keys)``
    Fingerprints every needed task (``fingerprint.graph_fingerprints``: chained through
    the graph, never hashing intermediate results), then walks down from the
    requested keys: a task whose fingerprint is in the memory tier, else in the disk
    tier (then promoted to memory), is a hit and is returned as a known result; the
    walk does not go below a hit, so upstream tasks are neither looked up nor run
    (unless a miss elsewhere needs them).  Only the tasks the walk reaches are looked
    up: a fully cached graph costs its fingerprints and one lookup.  The walk goes
    through aliases (a Dask collection's ``finalize`` alias included).
``prepare(compiled)``
    Every task left to run is a miss (it gets a :class:`StoreResult` hook) or
    uncacheable (its fingerprint says why: a lock argument, ``pure=False``,
    ``delayed(cache=False)``...; it and its dependents are not stored).
``finished(graph, error)``
    Records the run's stats for ``cache_info()``; failed runs count too (what did
    finish was stored).

**Where results are stored.**  :class:`StoreResult` is the per-task hook: a small
picklable object carrying the fingerprint, the disk folder's path (the worker reads
the key from the folder itself), this disk's :class:`~.disk.LoadCost` when this
process measured it already (else the first store that needs it measures it, once per
process) and the fingerprints of the task's inputs, never the store.  Called in the
caller (``sync``, ``threads``, tasks ``auto`` or ``processes`` run here) it puts the
result in the memory tier; wherever it is called, with a disk tier it writes the
entry when recomputing the result (its run time plus its costliest input's) would
take longer than loading it.  So on ``processes`` and the local cluster the worker
that computed a result writes its entry, and the result does not travel just to be
stored: results computed in another process reach the caller's memory tier through
the disk tier (the next run's disk hit promotes them).

**Memory only** (``cache=True``/``"memory"``, no disk tier): the hook is a *home* hook
(``plan.py``): a backend that runs the task in another process (``processes``,
``auto``, a process executor, the local cluster) sends its result back, even an
intermediate that would have stayed in the worker, and calls the hook with it in the
caller, which keeps it in the memory tier.  So a rerun with ``cache="memory"`` is all
hits on every backend.  Chosen over a memory tier in each worker, which the caller
would have to ask over the channel at plan time: workers are shared between runs,
replaced when they die or hang, and the cluster moves data between them, so such a
tier would be neither where the next run looks nor reliably there; and the results
that travel are those a cache in the caller must hold anyway.  The price: with
``cache="memory"`` on ``processes`` an intermediate of a chain run inside one worker
is pickled home once (a disk tier avoids it).

**Never stale** is the fingerprinter's promise (everything that can change a result is
in the fingerprint); this module adds only lookups and stores, and a damaged or
foreign disk entry is a miss (``disk.py``).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

from .. import config
from ..graph_walk import NO_KEY, is_graph_node, names_key, taskref_key
from ..plan import Planner
from . import disk, session
from .fingerprint import graph_fingerprints
from .folder import open_folder
from .info import HIT_DISK, HIT_MEMORY, MISS, UNCACHEABLE, RunStats
from .memory import MISSING
from .sizing import memory_size

__all__ = ["CachePlanner", "StoreResult", "plan_hook"]


def plan_hook(request: Any) -> CachePlanner | None:
    """The planner for a run whose ``cache`` option is on (None when it is off)."""
    setting = request.options.get("cache", False)
    if setting is False or setting is None:
        return None
    return CachePlanner(setting)


class CachePlanner(Planner):
    """The result cache's part in one run (see the module docstring)."""

    def __init__(self, setting: Any):
        self.setting = setting
        self.memory = session.memory_tier()
        self.folder = session.disk_folder(setting)
        # Measured by the first store that needs it (a run of hits never pays for it).
        self.cost = disk.known_load_cost(self.folder) if self.folder is not None else None
        self.stats = RunStats(setting=setting)
        self.known: dict = {}

    def __repr__(self) -> str:
        return f"<CachePlanner cache={self.setting!r}>"

    def plan(self, graph: Mapping, keys: list) -> dict:
        prints = graph_fingerprints(graph, keys)
        stats = self.stats
        stats.prints = prints
        stats.earlier = session.remember(prints)  # the runs before, for explain()
        self.known = known = self._lookup(graph, keys, prints)
        return known

    def _lookup(self, graph: Mapping, keys: list, prints: dict) -> dict:
        """Hits from the requested keys down, not below a hit (see the module docstring)."""
        known: dict = {}
        status = self.stats.status
        seen: set = set()
        asked: set = set()
        stack = list(reversed(keys))
        unprinted: list = []  # tasks the fingerprints did not reach (below an opt-out)
        while stack or unprinted:
            if not stack:  # fingerprint them now, from where the walk reached them
                more = graph_fingerprints(graph, unprinted)
                prints.update((k, p) for k, p in more.items() if k not in prints)
                asked.update(unprinted)
                stack, unprinted = unprinted, []
                seen.difference_update(stack)
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            value = graph[key]
            if not is_task_value(value):  # a literal (no inputs) or an alias (walk through)
                if names_key(value, graph) and value != key:
                    stack.append(value)
                elif is_graph_node(value):
                    stack.extend(value.dependencies)
                continue
            p = prints.get(key)
            if p is None and key not in asked:
                unprinted.append(key)
                continue
            if p is not None and p.digest is not None:
                found, tier = self._find(p.digest)
                if tier is not None:
                    known[key] = found
                    status[key] = tier
                    continue
            stack.extend(dependencies(value, graph))
        return known

    def _find(self, digest: bytes) -> tuple[Any, str | None]:
        """The stored result of ``digest`` and its tier (memory, else disk, which is then
        kept in memory); ``(None, None)`` for a miss."""
        found = self.memory.get(digest)
        if found is not MISSING:
            return found, HIT_MEMORY
        if self.folder is None:
            return None, None
        found = disk.read_entry(self.folder, digest)
        if found is disk.MISSING:
            return None, None
        self.memory.put(digest, found)
        return found, HIT_DISK

    def prepare(self, graph: Any) -> dict:
        stats = self.stats
        status, prints = stats.status, stats.prints
        folder_path = self.folder.path if self.folder is not None else None
        disk_max = config.get("cache_disk_max_bytes") if folder_path is not None else None
        hooks: dict = {}
        owner = os.getpid()
        for i, key in enumerate(graph.keys):
            if key in self.known:
                continue
            p = prints.get(key)
            if p is None or not is_task_value(graph.source.get(key)):
                continue
            if p.digest is None:
                status[key] = UNCACHEABLE
                continue
            status[key] = MISS
            needs = _dependency_digests(graph, i, prints) if folder_path is not None else ()
            hooks[i] = StoreResult(p.digest, folder_path, self.cost, disk_max, owner, needs)
        stats.hits = len(self.known)
        stats.disk_hits = sum(1 for s in status.values() if s == HIT_DISK)
        stats.misses = len(hooks)
        stats.uncacheable = sum(1 for s in status.values() if s == UNCACHEABLE)
        return hooks

    def finished(self, graph: Any, error: BaseException | None) -> None:
        session.record_run(self.stats)


class StoreResult:
    """The result hook of one cacheable task: stores ``value`` under ``digest``.

    Small and picklable (it travels with its task to worker processes): the
    fingerprint, the disk folder's path, the measured load cost, the disk budget, the
    pid of the caller (whose memory tier takes the result when the hook runs there)
    and the fingerprints of the task's dependencies.  ``timed``: the task runner
    passes the task's run time in seconds.

    **Worth writing?**  Recomputing a result after a restart means recomputing what
    it was made from too, so, as ``dask.cache`` and graphchain do, a task's cost is
    its own run time plus the largest cost among its dependencies
    (:data:`_costs`, kept per process: a dependency computed in another worker
    counts as free, which only errs towards not writing).  The entry is written when
    that cost is at least ``WRITE_MARGIN`` times the expected load time of a result
    of its size (``sizing.memory_size``, known before pickling).
    """

    __slots__ = ("digest", "folder", "cost", "disk_max", "owner", "needs", "home")
    timed = True

    def __init__(
        self,
        digest: bytes,
        folder: str | None,
        cost: Any,
        disk_max: Any,
        owner: int,
        needs: tuple = (),
    ):
        self.digest = digest
        self.folder = folder
        self.cost = cost
        self.disk_max = disk_max
        self.owner = owner
        self.needs = needs
        self.home = folder is None  # memory only: results computed elsewhere come home

    def __reduce__(self):
        args = (self.digest, self.folder, self.cost, self.disk_max, self.owner, self.needs)
        return (StoreResult, args)

    def __repr__(self) -> str:
        return f"<StoreResult {self.digest.hex()[:12]}>"

    def __call__(self, value: Any, seconds: float | None = None) -> None:
        if os.getpid() == self.owner:
            session.memory_tier().put(self.digest, value)
        if self.folder is None or seconds is None:
            return
        upstream = max((_costs.get(d, 0.0) for d in self.needs), default=0.0)
        total = seconds + upstream
        _remember_cost(self.digest, total)
        if total < disk.MIN_WRITE_SECONDS:  # quicker than any load: not worth a look
            return
        folder = open_folder(self.folder)
        cost = self.cost or disk.measure_load_cost(folder)  # once per process and folder
        if not cost.worth_writing(total, memory_size(value)):
            return  # loading it would not beat recomputing it
        if os.path.exists(disk.entry_path(folder, self.digest)):
            return  # another writer (kernel, worker) was first
        written = disk.write_entry(folder, self.digest, value, total)
        disk.account(folder, written, self.disk_max)


# fingerprint -> what recomputing that result costs (its run time plus its inputs'),
# for the tasks this process ran; bounded, cleared when full (an estimate, not state).
_costs: dict[bytes, float] = {}
MAX_COSTS = 200_000


def _remember_cost(digest: bytes, seconds: float) -> None:
    if len(_costs) >= MAX_COSTS:
        _costs.clear()
    _costs[digest] = seconds


def _dependency_digests(graph: Any, i: int, prints: dict) -> tuple:
    keys = graph.keys
    found = []
    for d in graph.deps[i]:
        p = prints.get(keys[d])
        if p is not None and p.digest is not None:
            found.append(p.digest)
    return tuple(found)


def is_task_value(value: Any) -> bool:
    """Whether a graph value is work (a task, a list expression, a Dask task node)
    rather than a literal or an alias, which are never cached."""
    typ = type(value)
    if typ is tuple:
        return bool(value) and callable(value[0])
    if typ is list:
        return True
    if is_graph_node(value):
        if not value.dependencies and hasattr(value, "value") and hasattr(value, "typ"):
            return False  # Dask's DataNode: a literal
        return getattr(value, "target", NO_KEY) is NO_KEY or len(value.dependencies) != 1
    return False


def dependencies(value: Any, graph: Mapping) -> list[Hashable]:
    """The keys a graph value reads, found without recursion (the compiler's rule)."""
    found: dict = {}
    stack = [value]
    first = True
    while stack:
        item = stack.pop()
        typ = type(item)
        if typ is tuple and item and callable(item[0]):
            stack.extend(item[1:])
        elif not first and names_key(item, graph):
            found[item] = None
        elif typ in (list, tuple, set, frozenset):
            stack.extend(item)
        elif is_graph_node(item):
            found.update(dict.fromkeys(item.dependencies))
        else:
            ref = taskref_key(item)
            if ref is not NO_KEY:
                found[ref] = None
        first = False
    return [k for k in found if names_key(k, graph)]
