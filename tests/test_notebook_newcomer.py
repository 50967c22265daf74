"""A newcomer's first hour, in a real kernel: what they type and what they read.

Each test is one thing issue 10 found rough: tracebacks that start at the user's line
and say each thing once, ``%schedule --help``, tab completion of the lazy exports, the
debugger's ``where`` without a ``run_cell_magic`` frame, a KilledWorker that reads as a
message, and a cluster status view that updates while the cluster works.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from .kernel_helpers import models, running_kernel, widget_states

pytestmark = pytest.mark.timeout(120)

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def kernel():
    with running_kernel("import notebook_sched as ns, os, time\n%load_ext notebook_sched") as k:
        yield k


def shown(ex) -> str:
    return ANSI.sub("", "\n".join(ex.error["traceback"]))


def test_schedule_help_prints_the_usage_and_changes_nothing(kn):
    out = kn.ok("%schedule --help\nprint(ns.config.get('scheduler'))").stdout
    assert out.lstrip().startswith("%schedule [-h]")
    assert "--workers" in out and "--no-progress" in out
    assert "--this-cell" not in out  # internal, written by %%schedule cells
    assert out.rstrip().endswith("threads")


def test_tab_completion_finds_the_lazy_exports(kn):
    found = set()
    for code in ("ns.pi", "ns.Pro"):
        msg_id = kn.client.complete(code, len(code))
        reply = kn.client.get_shell_msg(timeout=30)
        assert reply["parent_header"]["msg_id"] == msg_id
        found |= set(reply["content"]["matches"])
    assert {"picker", "Profiler"} <= found, found


FAILING_CELL = (
    "%%schedule processes --workers 1\n"
    "def scale(rows, factor):\n"
    "    kept = [r for r in rows if r]\n"
    "    return len(kept) / factor\n"
    "\n"
    "ns.get({'rows': [1, 0, 3], 'scale-7': (scale, 'rows', 0)}, 'scale-7')"
)


def test_schedule_cell_failure_starts_at_the_users_line_and_says_each_thing_once(kn):
    ex = kn.execute(FAILING_CELL)
    assert ex.error["ename"] == "ZeroDivisionError"
    text = shown(ex)
    first_frame = text.split("Traceback (most recent call last)", 1)[1].splitlines()[1]
    assert re.fullmatch(r"Cell In\[\d+\], line 6", first_frame), text
    assert "run_cell_magic" not in text and "notebook_sched/" not in text
    assert text.count("division by zero") == 1 and "[notebook_sched]" not in text
    assert text.startswith("notebook_sched: task 'scale-7' failed on the 'processes'")
    # ipdb's `where` starts at the same line: no run_cell_magic frame holding the cell.
    where = kn.ok("from notebook_sched.debug import post_mortem\npost_mortem(['where', 'q'])")
    stack = ANSI.sub("", where.stdout)
    assert "run_cell_magic" not in stack and "----> 6 ns.get(" in stack, stack
    # the cells are named as in tracebacks, not as IPython's temporary files
    assert re.search(r"> Cell In\[\d+\]\(4\)scale\(\)", stack), stack
    assert "ipykernel_" not in stack and "/tmp/" not in stack, stack
    # the settings of the %%schedule cell ended with it
    assert kn.ok("print(ns.config.get('scheduler'))").stdout.strip() == "threads"
    # line 1 reads as typed in a traceback, not as the line that opens the scope
    text = shown(kn.execute("%%schedule sync\nx = 1\nx + undefined_name"))
    assert re.search(r"1 %%schedule sync\n", text) and "--this-cell" not in text, text


def test_a_bag_task_failing_in_json_shows_the_rerun_frames_it_promises(kn):
    """Tutorial 05's failure: the headline says "the frames below are the rerun's", so
    the task's own frames (Dask's map, json's decoder) follow the cell's line, named by
    import path (no machine path)."""
    ex = kn.execute(
        "%%schedule processes --workers 1\n"
        "import dask.bag as db, json\n"
        "bag = db.from_sequence(['{\"a\": 1}', '{not json}'], npartitions=1)\n"
        "bag.map(json.loads).pluck('a').sum().compute()",
        timeout=90,
    )
    assert ex.error["ename"] == "JSONDecodeError"
    text = shown(ex)
    assert "the frames below are the rerun's" in text, text
    frames = [line for line in text.splitlines() if line.startswith(("Cell In[", "File "))]
    assert re.fullmatch(r"Cell In\[\d+\], line 4", frames[0]), frames
    assert frames[-1].startswith(f"File json{os.sep}decoder.py:"), frames
    assert any(f.startswith(f"File json{os.sep}__init__.py:") for f in frames), frames
    assert "notebook_sched/" not in text and os.path.expanduser("~") + os.sep not in text


def test_worker_traceback_names_the_cell_when_the_rerun_does_not_fail(kn):
    kn.ok(
        "import multiprocessing\n"
        "def store(value):\n"
        "    if multiprocessing.parent_process() is not None:\n"
        "        raise RuntimeError('disk full')\n"
        "    return value"
    )
    ex = kn.execute("ns.get({'v': 1, 's': (store, 'v')}, 's', scheduler='processes')")
    text = shown(ex)
    assert "did NOT fail" in text and "<dynamic-code>" not in text
    assert re.search(r"Cell In\[\d+\], line 4, in store", text), text
    assert text.count("disk full") == 2  # the worker's traceback, then the error itself
    # the record says the same as the display: the cell, never <dynamic-code>
    remote = kn.ok("print(ns.last_failure().remote_traceback)").stdout
    assert re.search(r"Cell In\[\d+\], line 4, in store", remote), remote
    assert "<dynamic-code>" not in remote


def test_worker_traceback_names_the_cell_when_the_rerun_fails_too(kn):
    """Tutorial 03 prints ``last_failure().remote_traceback`` after a rerun that failed
    the same way: the cell's name there too, as in the display."""
    kn.ok("def parse(text):\n    return float(text)")
    ex = kn.execute("ns.get({'t': 'n/a', 'v': (parse, 't')}, 'v', scheduler='processes')")
    assert ex.error["ename"] == "ValueError"
    remote = kn.ok("print(ns.last_failure().remote_traceback)").stdout
    assert re.search(r"Cell In\[\d+\], line 2, in parse", remote), remote
    assert "<dynamic-code>" not in remote


def test_graph_error_and_interrupt_show_the_cell_then_the_message(kn):
    ex = kn.execute("ns.get({'raw': [1, 2], 'even': ([2], 'raw')}, 'even')")
    text = shown(ex)
    assert ex.error["ename"] == "GraphError" and "notebook_sched/" not in text
    assert "Probably you wrote something like" in text

    msg_id = kn.send(
        "def nap(x):\n    time.sleep(5)\n    return x\n"
        "ns.get({'a': (nap, 1), 'b': (nap, 2)}, ['a', 'b'], scheduler='processes')"
    )
    time.sleep(1.5)
    kn.manager.interrupt_kernel()
    ex = kn.collect(msg_id, timeout=60)
    text = shown(ex)
    assert ex.error["ename"] == "KeyboardInterrupt"
    assert "notebook_sched/" not in text and "selectors" not in text, text
    assert "multiprocessing" not in text and len(text.splitlines()) < 15, text


def test_killed_worker_reads_as_a_message(kn):
    ex = kn.execute(
        "from notebook_sched import Client, LocalCluster\n"
        "def crash(_):\n"
        "    os._exit(1)\n"
        "with LocalCluster(n_workers=1) as cluster, Client(cluster) as client:\n"
        "    client.submit(crash, 1, key='crash').result()",
        timeout=90,
    )
    text = shown(ex)
    assert ex.error["ename"] == "KilledWorker"
    assert "client.py" not in text and "notebook_sched/" not in text, text
    assert text.count("the process exited by itself") == 1, text
    assert not text.startswith("notebook_sched: task"), text  # the message names the task


def test_cluster_view_updates_while_the_cluster_works(kn):
    ex = kn.ok(
        "from notebook_sched import Client, LocalCluster\n"
        "cluster = LocalCluster(n_workers=2)\n"
        "client = Client(cluster)\n"
        "def slow(x):\n"
        "    time.sleep(0.5)\n"
        "    return x\n"
        "futures = client.map(slow, range(8))\n"
        "cluster"
    )
    (view_id, history), *_ = models(ex.messages, "HTMLModel").items()
    assert "LocalCluster" in history[0][0]["value"]
    shown_text = ex.of_type("display_data")[0]["content"]["data"]["text/plain"]
    assert shown_text.startswith("LocalCluster: 2 workers")
    later = kn.drain(2.5)
    kn.ok("print(client.gather(futures))")
    kn.ok("client.close()\ncluster.close()")
    later += kn.drain(1.5)
    values = [s["value"] for s, _ in widget_states(later).get(view_id, []) if "value" in s]
    assert len(values) >= 2, values  # it changed while the tasks ran
    assert any("slow (1)" in v for v in values)  # a worker running a task of 'slow'
    assert any("<td>held</td>" not in v and "B</td>" in v for v in values)  # held bytes
    assert values[-1].endswith("· closed</div>")
