"""The job format: one task made self-contained by the caller, and how a worker runs it.

Everything a worker process (the pool's, or a foreign executor's) needs to run a task,
and nothing else: a spawned worker imports this module, ``_worker.py``, the engine's
small base modules and ``cloudpickle``.  A *job* is::

    (task, kind, func_or_expr, args_or_refs, local, send_back)

``task`` is the caller's task number; ``kind`` is graph.CALL, EXPR or NODE;
``args_or_refs`` holds the input values the caller already has; ``local`` lists
inputs produced earlier in the same batch, as ``(argument position or key, batch
position)``: this is how a linear chain runs inside one worker without sending its
intermediate results home; ``send_back`` is False for such intermediates, whose
result slot then holds ``NOT_SENT``.

A task's result hook (``CompiledGraph.on_result``) travels beside its job, in the
batch's ``hooks`` (``{task: hook}``, with ``keys``: ``{task: key}`` to name a hook
that raised), and runs in the worker (``task_runner.TaskRunner``).

Messages between the caller and a worker are the typed tuples below (the caller
dispatches on their type, as the cluster does on ``distributed/stimuli.py``'s):

``Batch(batch, jobs, every, hooks, keys, keep_inputs)``   caller -> worker: run
    ``jobs``; ``every``: the sampling rate when the caller measures, else None;
    ``keep_inputs`` (``auto``): a chain's last task keeps its in-batch input until its
    result has been pickled, so a result that cannot be pickled can be rerun on a
    thread in the caller (see ``Unpicklable``).
``Results(batch, results, final)``   results ``[(task, value, start, stop, measured)]``
    (``measured``: a ``measure.Measurement`` for a sampled task, else None); sent when
    the batch ends and every FLUSH_SECONDS meanwhile, so progress stays live.
``TaskError(batch, results, task, exception_bytes, traceback_text, local_inputs)``
    a task raised; sent at once, the rest of the batch is dropped.
``Unpicklable(batch, results, final, bad)``   some results could not be pickled:
    ``results`` holds the others, ``bad`` is ``[(task, reason, inputs)]``, ``inputs``
    the task's in-batch inputs ``[(task, value or NOT_SENT, picklable)]`` when the
    batch kept them; the batch goes on unless ``final``.
``Unloadable(batch, results, task, exception_bytes, traceback_text, local_inputs)``
    the batch could not be unpickled in the worker (``task`` -1: the caller finds the
    task whose job fails to load); the worker lives on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..graph import CALL, EXPR, evaluate

__all__ = [
    "make_job",
    "run_job",
    "NOT_SENT",
    "Batch",
    "Results",
    "TaskError",
    "Unpicklable",
    "Unloadable",
]

NOT_SENT = None  # the value slot of a result that stays in the worker


class Batch(NamedTuple):
    batch: int
    jobs: list
    every: int | None = None
    hooks: dict | None = None
    keys: dict | None = None
    keep_inputs: bool = False


class Results(NamedTuple):
    batch: int
    results: list
    final: bool


class TaskError(NamedTuple):
    batch: int
    results: list
    task: int
    exception: Any  # dumped bytes across processes; the exception itself on a thread
    traceback: str | None
    local_inputs: list


class Unpicklable(NamedTuple):
    batch: int
    results: list
    final: bool
    bad: list  # [(task, reason, inputs)]


class Unloadable(NamedTuple):
    batch: int
    results: list
    task: int
    exception: bytes
    traceback: str
    local_inputs: list


def batch_hooks(graph: Any, tasks: list) -> tuple[dict | None, dict | None]:
    """``(hooks, keys)`` of ``tasks`` for a batch: ``CompiledGraph.on_result`` cut to
    them, or ``(None, None)`` when none has a hook (the usual case: no cost)."""
    on_result = graph.on_result
    if not on_result:
        return None, None
    hooks = {t: on_result[t] for t in tasks if t in on_result}
    if not hooks:
        return None, None
    return hooks, {t: graph.keys[t] for t in hooks}


def make_job(task: int, spec: tuple, values: list, local: dict | None, send_back: bool) -> tuple:
    """A self-contained job for task ``task``: its inputs from ``values``, or, for the
    tasks in ``local`` (``{task: batch position}``), from earlier jobs of its batch."""
    kind = spec[0]
    in_batch = []
    if kind == CALL:
        args = spec[2]
        slots = spec[3]
        if slots:
            args = list(args)
            for pos, dep in slots:
                if local and dep in local:
                    in_batch.append((pos, local[dep]))
                else:
                    args[pos] = values[dep]
        return (task, CALL, spec[1], args, tuple(in_batch), send_back)
    refs = {}
    for ref_key, dep in spec[2].items():
        if local and dep in local:
            in_batch.append((ref_key, local[dep]))
        else:
            refs[ref_key] = values[dep]
    return (task, kind, spec[1], refs, tuple(in_batch), send_back)


def run_job(job: tuple, produced: list):
    """Run ``job``; ``produced`` holds the results of the earlier jobs of its batch."""
    _task, kind, target, inputs, local, _send = job
    if kind == CALL:
        if local:
            inputs = list(inputs)
            for pos, batch_pos in local:
                inputs[pos] = produced[batch_pos]
        return target(*inputs)
    for ref_key, batch_pos in local:
        inputs[ref_key] = produced[batch_pos]
    if kind == EXPR:
        return evaluate(target, inputs)
    return target(inputs)
