"""Helpers shared by the test modules: which backends to run on, waiting, leftover processes.

One copy of each, so a fix (a longer poll, a new backend) lands everywhere at once:

- :func:`local_backends` / :func:`remote_backends`: the backend names a module
  parametrizes over.  ``distributed`` is listed only where its module loads and has
  registered itself.  The fixture that starts the remote ones before a leak baseline is
  ``warm`` in ``conftest.py``: requested only by the tests that run on them, so a pure
  model test starts no process.
- :func:`wait_for`: poll a condition until a deadline, then fail the test.
- :func:`alive`: a pid that runs (a zombie does not count).
- :func:`marked_processes` / :func:`wait_for_no_marked_processes`: processes tagged by
  an environment variable, which survives reparenting (kernels, servers, browsers).

Nothing here imports more than the standard library at import time (``conftest``
imports this module before any test module, pure ones included).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import time

DISTRIBUTED_BACKEND = "notebook_sched.distributed.backend"

# The length of the chains that prove no code recurses over graph depth. 100,000 links
# are a hundred times Python's recursion limit and as many C frames as any stack holds,
# so a recursion fails at this length as surely as at a million; ``make test-scale``
# (``NOTEBOOK_SCHED_SCALE=1``) runs the million that the issues name.
LONG_CHAIN = 1_000_000 if os.environ.get("NOTEBOOK_SCHED_SCALE") == "1" else 100_000


@functools.cache
def remote_backends() -> tuple[str, ...]:
    """The backends that run tasks in other processes: ``processes``, and
    ``distributed`` where its module loads (importing it registers the backend)."""
    import notebook_sched as ns

    ns.config.activate()  # the package registers 'distributed' on the config's first use
    names = ["processes"]
    if importlib.util.find_spec(DISTRIBUTED_BACKEND) is not None:
        importlib.import_module(DISTRIBUTED_BACKEND)
        if "distributed" in ns.schedulers.names():
            names.append("distributed")
    return tuple(names)


def local_backends() -> list[str]:
    """Every backend of this machine: ``sync``, ``threads`` and :func:`remote_backends`."""
    return ["sync", "threads", *remote_backends()]


def warm_up(backend: str, num_workers: int | None = None) -> None:
    """Start ``backend``'s shared workers (the process pool, the default local cluster)
    with a one-task compute, so a leak baseline taken afterwards counts them."""
    import notebook_sched as ns

    ns.get({"warm": (len, "ab")}, "warm", scheduler=backend, num_workers=num_workers)


def stop_default_cluster() -> None:
    """Close the default local cluster, if its module was ever loaded."""
    backend = importlib.import_module(DISTRIBUTED_BACKEND)
    backend.shutdown()


def wait_for(condition, timeout: float = 5.0) -> None:
    """Poll ``condition()`` every 10 ms; fail the test if it is not true by ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: it exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def marked_processes(variable: str, marker: str) -> list:
    """Processes (but this one) whose environment carries ``variable=marker``."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(variable) == marker:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def wait_for_no_marked_processes(variable: str, marker: str, grace: float = 10.0) -> list:
    """Wait up to ``grace`` seconds for the marked processes to end; those left."""
    deadline = time.monotonic() + grace
    while True:
        left = marked_processes(variable, marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def outcome_within(call, seconds: float):
    """Run ``call()`` on a daemon thread; its result or the exception it raised. Fails
    the test if it has not ended in ``seconds`` (a hang must fail, not block pytest)."""
    import threading

    box: list = []

    def run():
        try:
            box.append(call())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"the run did not end within {seconds:.0f} s"
    return box[0]
