"""``advise()``: which scheduler this graph wants, measured rather than guessed.

::

    with notebook_sched.Advisor() as advisor:
        total.compute(scheduler="threads")
    advisor.advice()          # a table per task prefix and a recommendation

    notebook_sched.config.set(advise=True)    # or %sched_advise on: measure every run
    total.compute()
    notebook_sched.advise()   # the advice for the last run (also %sched_advise)

:class:`Advisor` is an observer (``events.py``) of ``task_measured``, the hook backends
call for a *sample* of tasks (every task over ``measure.LONG_TASK``, one in
``task_runner.SAMPLE_EVERY`` of the shorter ones) with the wall times, the CPU seconds of
the thread that ran it and its seconds runnable without a CPU, read on that thread;
and of ``task_done``, a C-level ``list.append`` that counts every task.  While a run is
in progress it keeps a :class:`~notebook_sched.gil.GilProbe` sampling; the probe's
samples are spread over the prefixes of the measured tasks that were running
(``notebook_sched.gil.attribute``).  So measuring costs about 1% on a graph of no-op
tasks and nothing measurable on real ones.

:meth:`Advisor.advice` turns the records into an :class:`Advice`: one
:class:`AdviceRow` per prefix (tasks, wall, CPU, busy-GIL share, verdict, where it
ran) and a :class:`Recommendation` from ``advice_model.predict`` for each backend on
this machine's measured costs (``costs.py``).

Tasks that ran in another process (``processes``, auto's process side, the cluster and
dask.distributed workers) are measured there (``notebook_sched/measure.py``): their
events carry the worker thread's CPU, the result's bytes and the busy-GIL share seen
by a probe in that worker, so the caller's probe is never attributed to them.

One number per fact.  A prefix whose tasks ran with no probe sample (the caller's
probe starts with the first long task, so a single 1 s task on ``sync`` never gets
one) has an *unknown* GIL share: its row says "GIL unknown", and no recommendation is
built on it.  After an ``auto`` run a prefix's GIL share is the one auto routed on
(``Router.shares``), the number its "why" line gives; the sentence's reason is the
prefix that decides the recommendation, in the table's words and rounding; and the
sentence says whether auto did well against the best prediction.  The tasks' time
runnable without a CPU (``starved``) says how busy the machine was: the predictions
account for it (``advice_model.Load``) and, past ``BUSY`` of the tasks' time, the
sentence says the machine was busy and the prediction is rough.

Limits, said where the advice is shown: the task events carry no dependencies, so the
model replays tasks as independent (optimistic for long chains) and counts each
result's bytes once; a result's size is known only where it is cheap (arrays, buffers,
strings: ``bytes_out`` sums those, the rest count 0); the first long task of a burst on
a worker process runs before that worker's probe starts, so its GIL share is unknown.
"""

from __future__ import annotations

import functools
import html
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..api import Additions, RunRequest
from ..events import Observer, RunInfo
from ..gil import GilProbe, attribute
from ..measure import CALLER, LONG_TASK, PROCESS, THREAD, Measurement
from ..schedulers.auto_routing import routing_prefix
from .advice_model import BACKENDS, Costs, Load, TaskSample, predict, prefix_stats
from .progress import prefix_function

__all__ = ["Advisor", "Advice", "AdviceRow", "Recommendation", "advise", "advise_hook"]

MEASURED_BACKENDS = ("sync", "threads", "auto")  # the caller's probe sees their threads
VERDICT_WORDS = {
    "holds-gil": "holds the GIL",
    "releases-gil": "releases the GIL",
    "waits": "waits (I/O or sleep)",
}
UNKNOWN_GIL = "GIL unknown"  # CPU measured, but no probe sample while its tasks ran
BUSY = 0.2  # share of the tasks' running time spent waiting for a CPU: a busy machine
HINT_GAIN = 1.3  # the least predicted speed-up that is worth a hint


@dataclass(frozen=True)
class AdviceRow:
    prefix: str
    tasks: int
    wall: float
    cpu: float | None  # None: not measurable on the backend that ran it
    gil_busy: float | None
    bytes_out: int
    verdict: str | None
    ran_on: str
    why: str = ""  # under auto: why its tasks went where they went


@dataclass(frozen=True)
class Recommendation:
    backend: str
    workers: int
    predicted_seconds: float
    measured_seconds: float
    ran_on: str
    speedup: float  # measured_seconds / predicted_seconds
    reason: str
    busy: float = 0.0  # share of the tasks' running time spent waiting for a CPU


class Advisor(Observer):
    """Measures the runs it observes (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _runs and _probe
        self._records: list[Measurement] = []  # every measured task, all runs
        self._done: list = []  # keys of finished tasks, all runs
        self.task_done = self._done.append  # a C-level call: counting costs ~30 ns
        # (run, start time, stop time or 0, first index in _done, end index or -1)
        self._runs: list[tuple[RunInfo, float, float, int, int]] = []
        self._probe: GilProbe | None = None
        self._samples: list[tuple[float, float]] = []
        self._measuring = False
        # Set by samples(), read by advice(): per prefix, the kinds of place its tasks
        # ran (Measurement.where), and the prefixes with a GIL / a CPU measurement.
        self._workers: dict[str, set] = {}
        self._gil_names: set[str] = set()
        self._cpu_names: set[str] = set()
        self._routes: dict[str, str] = {}  # auto's reasons, per prefix (RunInfo.extra)

    # -- events ------------------------------------------------------------------------
    def graph_started(self, run: RunInfo) -> None:
        with self._lock:
            self._measuring = run.scheduler in MEASURED_BACKENDS
            self._runs.append((run, time.time(), 0.0, len(self._done), -1))

    def task_measured(self, record: Measurement) -> None:
        # The GIL only matters where tasks take time: the caller's probe starts with the
        # first long task, so graphs of tiny tasks never pay for its thread (the tasks
        # running before it starts go without GIL samples).  A task measured in a worker
        # process (``record.remote``) brings that worker's GIL share; the caller's probe
        # says nothing of it (samples() keeps it out of attribution).
        if (
            self._probe is None
            and self._measuring
            and record.stop - record.start >= LONG_TASK
            and not record.remote
        ):
            with self._lock:
                if self._probe is None and self._measuring:
                    self._probe = GilProbe().start()
        self._records.append(record)

    def graph_finished(self, run: RunInfo, error: BaseException | None) -> None:
        with self._lock:
            probe, self._probe = self._probe, None
            for n in range(len(self._runs) - 1, -1, -1):
                if self._runs[n][0] is run:
                    _, t0, _, first, _ = self._runs[n]
                    self._runs[n] = (run, t0, time.time(), first, len(self._done))
                    break
        if probe is not None:
            probe.stop(wait=False)  # joining would cost a short run a probe cycle
            end = time.time()
            self._samples.extend(s for s in probe.corrected_samples() if s[0] <= end)

    # -- results -----------------------------------------------------------------------
    def samples(self, every_run: bool = False) -> tuple[list[TaskSample], str, int, float]:
        """Task samples standing for every task of the last run (each prefix's measured
        tasks, repeated to its count of finished tasks), with the run's backend, worker
        count and duration; ``every_run``: of all runs seen (the Profiler's summary)."""
        with self._lock:
            if not self._runs:
                raise LookupError("this Advisor has not seen a run yet: compute inside it")
            run, t0, t1, first, last = self._runs[-1]
            runs = [r[0] for r in self._runs] if every_run else [run]
            if every_run:
                t0, first, t1, last = self._runs[0][1], 0, 0.0, -1
            done = self._done[first : last if last >= 0 else len(self._done)]
        records = [r for r in self._records if r.start >= t0 and (not t1 or r.stop <= t1)]
        prefix = prefix_function()
        names = [prefix(r.key) for r in records]
        # The caller's GIL tells only about tasks that ran in the caller, on threads.
        in_caller = [r.cpu is not None and not r.remote for r in records]
        intervals = [
            (n, r.start, r.stop)
            for n, r, here in zip(names, records, in_caller, strict=True)
            if here
        ]
        shares = attribute(self._samples, intervals) if self._samples else {}
        measured: dict[str, list[TaskSample]] = {}
        self._workers = {}
        remote_means = _remote_gil_means(records, names)
        gil_names = set(remote_means)
        # The share auto routed on (noted in the run: Reporter.note_run): one number
        routed = dict(run.extra.get("gil_shares", {})) if run.scheduler == "auto" else {}
        for record, name, here in zip(records, names, in_caller, strict=True):
            self._workers.setdefault(name, set()).add(record.where)
            kind = name if name in routed else routing_prefix(name)  # w0, w1: auto's w
            if kind in routed:  # the share auto routed on: one number per fact
                gil = routed[kind]
                gil_names.add(name)
            elif here:
                share = shares.get(name)
                gil = share.gil_busy if share else 0.0  # 0.0 stands in: unknown
                if share:
                    gil_names.add(name)
            elif record.gil_busy is None:  # a worker's first long task ran before its
                gil = remote_means.get(name, 0.0)  # probe: the prefix's mean
            else:
                gil = record.gil_busy
            wall = record.stop - record.start
            sample = TaskSample(
                prefix=name,
                wall=wall,
                cpu=wall if record.cpu is None else record.cpu,
                gil_busy=gil,
                bytes_out=record.nbytes or 0,
                starved=record.starved or 0.0,
            )
            measured.setdefault(name, []).append(sample)
        counts: dict[str, int] = {}
        for key in done:
            name = prefix(key)
            counts[name] = counts.get(name, 0) + 1
        out = []
        for name, count in counts.items():
            have = measured.get(name)
            if have:
                out.extend(have[n % len(have)] for n in range(max(count, len(have))))
        self._gil_names = gil_names
        self._cpu_names = {n for n, r in zip(names, records, strict=True) if r.cpu is not None}
        self._routes = {}
        for seen in runs:  # what auto noted on each run (Reporter.note_run), later wins
            self._routes.update(seen.extra.get("routes", {}))
        return out, run.scheduler, run.workers, (t1 or time.time()) - t0

    def advice(self, costs: Costs | None = None, every_run: bool = False) -> Advice:
        """The :class:`Advice` for the last run this Advisor observed (``every_run``:
        for all of them together, as if one)."""
        if costs is None:
            from .costs import measured_costs

            costs = measured_costs()
        samples, ran_on, workers, seconds = self.samples(every_run)
        rows = []
        for s in prefix_stats(samples):
            where, why = ran_on, ""
            if ran_on == "auto":
                kinds = self._workers.get(s.prefix, set())
                where = "auto: " + ", ".join(sorted(_KIND_WORDS.get(k, k) for k in kinds))
                why = self._routes.get(s.prefix, "")
            known = s.prefix in self._gil_names
            cpu_known = known or s.prefix in self._cpu_names
            verdict = s.verdict if known else None
            if not known and cpu_known and s.verdict == "waits":
                verdict = "waits"  # waiting shows without a GIL measurement
            rows.append(
                AdviceRow(
                    s.prefix,
                    s.tasks,
                    s.wall,
                    s.cpu if cpu_known else None,
                    s.gil_busy if known else None,
                    s.bytes_out,
                    verdict,
                    where,
                    why,
                )
            )
        unknown = [r for r in rows if r.verdict is None and r.cpu is not None]
        total = sum(r.wall for r in rows) or 1.0
        if any(r.wall >= 0.1 * total for r in unknown):
            names = ", ".join(r.prefix for r in unknown)
            note = (
                f"No recommendation: the GIL share of {names} is unknown (its tasks ran "
                f"before the GIL probe started, which it does with the first long task); "
                f"compute a graph of several such tasks to measure it."
            )
            return Advice(rows, None, note)
        return Advice(rows, recommend(samples, rows, ran_on, workers, seconds, costs))

    def __repr__(self) -> str:
        return f"<Advisor runs={len(self._runs)} tasks={len(self._records)}>"


def _remote_gil_means(records: list, names: list) -> dict[str, float]:
    """Mean busy-GIL share per prefix of the tasks measured in worker processes."""
    sums: dict[str, list] = {}
    for record, name in zip(records, names, strict=True):
        if record.remote and record.gil_busy is not None:
            total = sums.setdefault(name, [0.0, 0])
            total[0] += record.gil_busy
            total[1] += 1
    return {name: busy / count for name, (busy, count) in sums.items()}


_KIND_WORDS = {THREAD: "threads", PROCESS: "processes", CALLER: "inline"}


def machine_load(samples: list[TaskSample], ran_on: str, workers: int) -> Load | None:
    """How busy the machine was while ``samples`` ran (None: no CPU time measured)."""
    cpu = sum(s.cpu for s in samples)
    starved = sum(s.starved for s in samples)
    if cpu <= 0:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return Load(
        cores=cores or os.cpu_count() or 1,
        share=cpu / (cpu + starved),
        runnable=1 if ran_on == "sync" else max(workers, 1),
    )


def recommend(samples, rows, ran_on, workers, seconds, costs) -> Recommendation | None:
    """The backend with the least predicted time, against what the run measured."""
    if not samples or not any(r.verdict for r in rows):
        return None
    slots = max(workers, 2) if ran_on == "sync" else workers
    load = machine_load(samples, ran_on, workers)
    predicted = {
        b: predict(samples, b, 1 if b == "sync" else slots, costs, b == ran_on, load)
        for b in BACKENDS
    }
    # After auto, against the best of the others: "did auto do well?" (auto's own
    # prediction replays what it did, so it cannot answer that).
    choices = [b for b in BACKENDS if b != "auto"] if ran_on == "auto" else BACKENDS
    best = min(choices, key=predicted.__getitem__)
    if best == ran_on:
        reason = f"{ran_on} already suits this graph"
    else:
        reason = describe(deciding_row(rows, best))
    time_best = predicted[best]
    busy = 1.0 - load.share if load is not None else 0.0
    return Recommendation(
        best,
        slots,
        time_best,
        seconds,
        ran_on,
        seconds / time_best if time_best else 1.0,
        reason,
        busy,
    )


def deciding_row(rows: list[AdviceRow], best: str) -> AdviceRow:
    """The row that argues for ``best``: the longest GIL-holding prefix for the
    backends that move GIL holders to processes, else the longest one that does not
    hold it (threads), else the longest."""
    measured = [r for r in rows if r.verdict] or rows
    holders = [r for r in measured if r.verdict == "holds-gil"]
    others = [r for r in measured if r.verdict != "holds-gil"]
    pick = holders if best in ("processes", "auto") else others
    return max(pick or measured, key=lambda r: r.wall)


def describe(row: AdviceRow) -> str:
    """``parse holds the GIL 96% of its time``, ``load releases the GIL (3% GIL busy)``
    (rounded as the table rounds them)."""
    if row.verdict == "holds-gil":
        return f"{row.prefix} holds the GIL {_pct(row.gil_busy)} of its time"
    if row.verdict == "releases-gil":
        return f"{row.prefix} releases the GIL ({_pct(row.gil_busy)} GIL busy)"
    if row.verdict == "waits":
        return f"{row.prefix} waits (I/O or sleep; {_pct(row.cpu, row.wall)} on a CPU)"
    return f"{row.prefix} was not measured"


def _pct(value: float | None, of: float = 1.0) -> str:
    """A share as the table shows it."""
    return "-" if value is None or not of else f"{min(value / of, 1.0):.0%}"


def verdict_words(verdict: str | None, cpu_known: bool = True) -> str:
    """The words for a verdict, in the table, the summary and the sentences alike."""
    if verdict is None:
        return UNKNOWN_GIL if cpu_known else "unmeasured"
    return VERDICT_WORDS.get(verdict, verdict)


def _auto_sentence(rec: Recommendation) -> str:
    """After an ``auto`` run: did auto do well, against the best other backend?"""
    took = f"auto took {rec.measured_seconds:.2f} s"
    other = f"on {rec.backend} ({rec.workers} workers) the model predicts about "
    if rec.speedup < HINT_GAIN:
        return (
            f"auto did well: {took}; the best other backend, {other}"
            f"{rec.predicted_seconds:.2f} s. Keep auto."
        )
    return (
        f"auto could do better: {took}; {other}{rec.predicted_seconds:.2f} s "
        f"({rec.speedup:.1f}x), since {rec.reason}."
    )


class Advice:
    """Rows per prefix and a recommendation; prints as text, renders as HTML."""

    columns = ("prefix", "tasks", "wall (s)", "CPU", "GIL busy", "bytes out", "verdict", "ran on")

    def __init__(
        self, rows: list[AdviceRow], recommendation: Recommendation | None, note: str = ""
    ):
        self.rows = rows
        self.recommendation = recommendation
        self.note = note  # why there is no recommendation, when that is known

    def _cells(self) -> list[tuple[str, ...]]:
        return [
            (
                r.prefix,
                str(r.tasks),
                f"{r.wall:.3f}",
                _pct(r.cpu, r.wall),
                _pct(r.gil_busy),
                f"{r.bytes_out:,}",
                verdict_words(r.verdict, r.cpu is not None),
                r.ran_on,
            )
            for r in self.rows
        ]

    def sentence(self) -> str:
        rec = self.recommendation
        if rec is None:
            return self.note or (
                "No recommendation: no task was measured (run on sync or threads to measure)."
            )
        if rec.ran_on == "auto":
            text = _auto_sentence(rec)
        elif rec.backend == rec.ran_on:
            text = f"{rec.reason}: keep {rec.backend} (about {rec.predicted_seconds:.2f} s)."
        else:
            text = (
                f"{rec.reason}: on {rec.backend} ({rec.workers} workers) this graph would take "
                f"about {rec.predicted_seconds:.2f} s instead of {rec.measured_seconds:.2f} s "
                f"({rec.speedup:.1f}x)."
            )
        if rec.busy >= BUSY:
            text += (
                f" The machine was busy (its tasks waited {rec.busy:.0%} of their running "
                f"time for a CPU): the prediction assumes that load and is unreliable."
            )
        return text

    def _why_lines(self) -> list[str]:
        return [f"  {r.prefix}: {r.why}" for r in self.rows if r.why]

    def __repr__(self) -> str:
        cells = [self.columns, *self._cells()]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        why = self._why_lines()
        extra = ["", "Where auto ran each prefix, and why:", *why] if why else []
        return "\n".join([*lines, *extra, "", self.sentence()])

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
            for row in self._cells()
        )
        return (
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            + "".join(f"<p>{html.escape(line.strip())}</p>" for line in self._why_lines())
            + f"<p>{html.escape(self.sentence())}</p>"
        )


# The Advisor of the last run measured by advise_hook (config advise=True).
_last_advisor: Advisor | None = None


def advise(source: object = None) -> Advice:
    """The :class:`Advice` for ``source`` (an :class:`Advisor`, or anything with an
    ``advisor`` attribute), or for the last run measured since
    ``config.set(advise=True)`` (``%sched_advise on``)."""
    if source is None:
        if _last_advisor is None:
            raise LookupError(
                "No measured run yet. Turn measuring on with "
                "notebook_sched.config.set(advise=True) (or %sched_advise on) and compute "
                "again, or compute inside `with notebook_sched.Advisor() as advisor:` and "
                "call advisor.advice()."
            )
        return _last_advisor.advice()
    advisor = source if isinstance(source, Advisor) else getattr(source, "advisor", None)
    if not isinstance(advisor, Advisor):
        raise TypeError(
            f"advise() takes an Advisor (or nothing, for the last measured run); got "
            f"{type(source).__name__}."
        )
    return advisor.advice()


ADVICE_AFTER = 3.0  # seconds a compute must take before a hint is worth showing
_hinted: set = set()  # kinds of graph (their prefixes) already given a hint


def advise_hook(request: RunRequest) -> Additions | None:
    """Run hook: measure the run for :func:`advise` (see config ``advise``) and, when
    automatic, show one line of advice after a long compute that could go faster."""
    from .. import config
    from .hooks import _wanted

    setting = config.get("advise")
    automatic = setting is None
    if setting is False:
        return None
    if automatic and not _wanted(request.options.get("progress")):
        return None
    advisor = Advisor()
    return Additions(observers=(advisor,), around=functools.partial(_advised, advisor, automatic))


def _advised(advisor: Advisor, automatic: bool, call: Callable[[], Any]) -> Any:
    __tracebackhide__ = True
    global _last_advisor
    try:
        result = call()
    finally:
        if advisor._runs:
            _last_advisor = advisor
    if automatic and advisor._runs:
        _maybe_hint(advisor)
    return result


def _maybe_hint(advisor: Advisor) -> None:
    """One line under the progress bar, once per kind of graph (never raises).

    Only after runs on this machine's backends, the ones the model chooses among: a
    cluster (``distributed``, ``dask``) or an executor of the user's is picked for more
    than one machine's speed (data that does not fit, other machines), so it gets
    advice when asked (``advise()``), not a hint to leave it."""
    try:
        run, t0, t1, _first, _last = advisor._runs[-1]
        if not t1 or t1 - t0 < ADVICE_AFTER or run.scheduler not in BACKENDS:
            return
        advice = advisor.advice()
        rec = advice.recommendation
        kind = frozenset(row.prefix for row in advice.rows)
        if rec is None or rec.backend == rec.ran_on or rec.speedup < HINT_GAIN or kind in _hinted:
            return
        _hinted.add(kind)
        show_hint(advice)
    except Exception:  # advice is a courtesy: it must never fail a compute
        return


def show_hint(advice: Advice) -> None:
    """Display the advice's sentence as one grey line (text where there is no HTML)."""
    line = (
        f"notebook_sched advice: {advice.sentence()} "
        f"(ns.advise() for the table; ns.config.set(advise=False) turns hints off)"
    )
    try:
        from IPython.display import HTML, display

        display(HTML(f"<div style='color:#555;font-size:90%'>{html.escape(line)}</div>"))
    except ImportError:
        print(line)
