"""The notebook toolkit in a real IPython kernel (ipykernel), driven over ZMQ.

One kernel serves the module (start-up costs seconds); each test leaves the config
as it found it.  What is checked is what a front end would see: execute replies,
streams, display data and the widget comm messages on IOPub.
"""

from __future__ import annotations

import time

import pytest

from .kernel_helpers import (
    FAILING_TASK_CELL,
    LAST_TASK_FRAME,
    Kernel,
    models,
    running_kernel,
    sent_at,
    widget_states,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def kernel():
    with running_kernel("import notebook_sched as ns\n%load_ext notebook_sched") as k:
        yield k


def config_of(k: Kernel) -> tuple:
    ex = k.ok(
        "print(repr((ns.config.get('scheduler'), ns.config.get('num_workers'),"
        " ns.config.get('progress'), ns.config.get('rerun'))))"
    )
    return eval(ex.stdout)  # our own repr of plain values


# -- %schedule ---------------------------------------------------------------------


def test_schedule_line_magic_shows_and_sets_defaults(kn):
    shown = kn.ok("%schedule").stdout
    assert shown.startswith("scheduler: threads")
    assert "workers:   auto" in shown and "backends:  sync" in shown
    kn.ok("%schedule processes --workers 3 --no-progress --no-rerun")
    assert config_of(kn) == ("processes", 3, False, "never")
    assert "scheduler: processes" in kn.ok("%schedule").stdout
    kn.ok("%schedule single-threaded -w auto --progress --rerun")
    assert config_of(kn) == ("sync", None, True, "always")


@pytest.mark.parametrize(
    "line, message",
    [
        ("%schedule bogus", "Unknown scheduler 'bogus'. Choose one of: sync"),
        ("%schedule threads --workers 0", "positive integer or 'auto'"),
        ("%schedule threads --workers lots", "positive integer or 'auto'"),
        ("%schedule --progress --no-progress", "either --progress or --no-progress"),
        ("%schedule threads --speed 3", "unrecognized arguments: --speed 3"),
    ],
)
def test_schedule_bad_arguments_raise_usage_error(kn, line, message):
    ex = kn.execute(line)
    assert ex.status == "error" and ex.error["ename"] == "UsageError"
    text = "".join(ex.error["traceback"])
    assert message in text
    if "Unknown" in message:
        assert "threads (threading)" in text and "processes (multiprocessing)" in text
    assert config_of(kn) == ("threads", None, None, "auto")


def test_cell_magic_scopes_settings_and_displays_last_expression(kn):
    kn.ok("%schedule threads --workers 2")
    ex = kn.ok(
        "%%schedule sync --workers 3 --no-progress\n"
        "inside = (ns.config.get('scheduler'), ns.config.get('num_workers'),"
        " ns.config.get('progress'))\n"
        "x = ns.get({'a': 1, 'b': (sum, ['a', 'a'])}, 'b')\n"
        "inside, x"
    )
    assert ex.result["text/plain"] == "(('sync', 3, False), 2)"
    assert config_of(kn) == ("threads", 2, None, "auto")
    ex = kn.ok("%%schedule processes\ny = 5")
    assert ex.result is None  # a statement displays nothing
    assert kn.ok("print(y)").stdout == "5\n"


def test_cell_magic_failure_restores_settings_and_debugs_into_the_task(kn):
    kn.ok("%schedule threads --workers 2")
    ex = kn.execute("%%schedule processes --workers 1\n" + FAILING_TASK_CELL)
    assert ex.status == "error" and ex.error["ename"] == "ZeroDivisionError"
    shown = "\n".join(ex.error["traceback"])
    assert "task 'scale-7' failed on the 'processes' scheduler" in shown
    # Said once: the headline (key, backend, the rerun's outcome), the user's cell line
    # (not a run_cell_magic frame), the task's frame, the error; no worker copy, no notes.
    assert "it failed the same way" in shown and "_worker.py" not in shown
    assert shown.count("division by zero") == 1 and shown.count("[notebook_sched]") == 0
    assert "run_cell_magic" not in shown and "ns.get(dsk, \x1b" in shown
    assert "engine.py" not in shown and "notebook_sched/debug" not in shown
    assert config_of(kn) == ("threads", 2, None, "auto")
    # What %debug would open: the bottom of sys.last_traceback is the task, with locals.
    ex = kn.ok(
        LAST_TASK_FRAME + "print(tb.tb_frame.f_code.co_name, sorted(tb.tb_frame.f_locals.items()))"
    )
    assert ex.stdout.strip() == "scale_rows [('factor', 0), ('kept', [1, 3]), ('rows', [1, 0, 3])]"
    ex = kn.ok("ns.last_failure()")
    assert "task 'scale-7' failed on the 'processes' scheduler" in ex.result["text/plain"]
    assert "'factor': 0" in ex.result["text/plain"]
    assert "scale-7" in ex.result["text/html"] and "<table>" in ex.result["text/html"]


def test_sched_rerun_raises_in_the_task_frame_on_sync(kn):
    ex = kn.execute(
        "def pick(xs, i):\n"
        "    chosen = xs[i]\n"
        "    return chosen\n"
        "ns.get({'xs': [1, 2], 'i': 5, 'pick-1': (pick, 'xs', 'i')}, 'pick-1',"
        " scheduler='processes', rerun='never')"
    )
    assert ex.error["ename"] == "IndexError"
    ex = kn.execute("%sched_rerun")
    assert ex.status == "error" and ex.error["ename"] == "IndexError"
    ex = kn.ok(
        "tb = sys.last_traceback\n"
        "while tb.tb_next is not None:\n"
        "    tb = tb.tb_next\n"
        "print(tb.tb_frame.f_code.co_name, tb.tb_frame.f_locals['i'], ns.last_failure().backend)"
    )
    assert ex.stdout.strip() == "pick 5 sync"


# -- progress ------------------------------------------------------------------------

SLOW_GRAPH = """
import time
def load(i):
    time.sleep(0.02)
    return i
def clean(x):
    time.sleep(0.02)
    if x == FAIL_AT:
        time.sleep(1.0)  # fail after the bar has appeared, whatever the order
        raise ValueError(f"bad row {{x}}")
    return x
FAIL_AT = {fail_at}
dsk = {{f"load-{{i}}": (load, i) for i in range({n})}}
dsk.update({{f"clean-{{i}}": (clean, f"load-{{i}}") for i in range({n})}})
dsk["total"] = (sum, [f"clean-{{i}}" for i in range({n})])
"""


def bars_by_prefix(messages: list) -> dict[str, list]:
    """{prefix: [bar states]} from the widget traffic of one cell (bars read "name n / N")."""
    return {
        history[0][0]["description"].split()[0]: history
        for history in models(messages, "IntProgressModel").values()
    }


def test_progress_widget_updates_live_and_turns_green(kn):
    kn.ok(SLOW_GRAPH.format(n=60, fail_at=-1))
    ex = kn.ok(
        "r = ns.get(dsk, 'total', scheduler='threads', num_workers=2)\n"
        "print('END', repr(time.time()))\n"
        "r"
    )
    end = float(ex.stdout.split("END ")[1])
    assert ex.result["text/plain"] == str(sum(range(60)))
    bars = bars_by_prefix(ex.messages)
    assert set(bars) == {"load", "clean", "total"}
    clean = bars["clean"]
    assert clean[0][0]["max"] == 60
    live = [s["value"] for s, m in clean if "value" in s and 0 < s["value"] < 60]
    live_sent = [sent_at(m) for s, m in clean if "value" in s and 0 < s["value"] < 60]
    assert len(set(live)) >= 2, clean  # advanced at least twice during the run
    assert max(live_sent) < end  # ... and those updates left the kernel before it ended
    assert live == sorted(live)
    for history in bars.values():
        final = {k: v for s, _ in history for k, v in s.items()}
        assert final["bar_style"] == "success" and final["value"] == final["max"]
        assert final["description"].endswith(f"{final['max']} / {final['max']}")
    displays = ex.of_type("display_data")
    assert any("application/vnd.jupyter.widget-view+json" in d["content"]["data"] for d in displays)
    updated = ex.of_type("update_display_data")  # the text fallback ends on the final line
    assert len(updated) == 1
    assert updated[0]["content"]["data"]["text/plain"].startswith("notebook_sched done: 121/121")
    assert all(m["parent_header"]["msg_id"] == ex.msg_id for m in ex.messages)


def test_quick_compute_shows_no_bar(kn):
    ex = kn.ok("ns.get({'a': 1, 'b': (sum, ['a', 'a'])}, 'b')")
    assert widget_states(ex.messages) == {}  # not a single widget model was made
    assert ex.of_type("display_data") == []


def test_progress_widget_turns_red_with_key_and_message(kn):
    kn.ok(SLOW_GRAPH.format(n=40, fail_at=30))
    ex = kn.execute("ns.get(dsk, 'total', scheduler='sync')")
    assert ex.status == "error" and ex.error["ename"] == "ValueError"
    bars = bars_by_prefix(ex.messages)
    styles = {
        prefix: [s["bar_style"] for s, _ in history if "bar_style" in s][-1]
        for prefix, history in bars.items()
    }
    assert styles["clean"] == "danger" and styles["load"] != "danger"
    states = [s for h in models(ex.messages, "HTMLModel").values() for s, _ in h]
    texts = [s["value"] for s in states if "value" in s]
    assert any("clean-30" in t and "ValueError: bad row 30" in t for t in texts)
    fallback = ex.of_type("update_display_data")[0]["content"]["data"]["text/plain"]
    assert fallback.startswith("notebook_sched FAILED (")  # counts first: reprs get cut
    assert "): task 'clean-30' raised ValueError: bad" in fallback


def test_no_progress_option_hides_the_bar(kn):
    kn.ok(SLOW_GRAPH.format(n=30, fail_at=-1))
    ex = kn.ok("%%schedule sync --no-progress\nns.get(dsk, 'total')")
    assert models(ex.messages, "IntProgressModel") == {}


def test_interrupt_leaves_the_bar_orange_and_the_kernel_usable(kn):
    kn.ok(SLOW_GRAPH.format(n=200, fail_at=-1))
    msg_id = kn.send("ns.get(dsk, 'total', scheduler='sync')")
    time.sleep(1.5)  # the bar is up after 0.5 s
    kn.manager.interrupt_kernel()
    ex = kn.collect(msg_id, timeout=30)
    assert ex.status == "error" and ex.error["ename"] == "KeyboardInterrupt"
    bars = bars_by_prefix(ex.messages)
    final = {k: v for s, _ in bars["load"] for k, v in s.items()}
    assert final["bar_style"] == "warning" and 0 < final["value"] < 200
    texts = [s["value"] for h in models(ex.messages, "HTMLModel").values() for s, _ in h]
    assert "interrupted" in texts[-1]
    assert kn.ok("ns.get({'a': 2, 'b': (sum, ['a', 'a'])}, 'b')").result["text/plain"] == "4"


def test_threads_failure_keeps_the_task_frame(kn):
    ex = kn.execute(
        "def halve(n):\n"
        "    half = n // 2\n"
        "    return 1 / (n - 2 * half)\n"
        "ns.get({'n': 4, 'halve-1': (halve, 'n')}, 'halve-1', scheduler='threads')"
    )
    assert ex.error["ename"] == "ZeroDivisionError"
    shown = "\n".join(ex.error["traceback"])
    assert "task 'halve-1' failed on the 'threads' scheduler (thread-0)" in shown
    assert "threads.py" not in shown and "engine.py" not in shown
    ex = kn.ok(
        "tb = sys.last_traceback\n"
        "while tb.tb_next is not None:\n"
        "    tb = tb.tb_next\n"
        "print(tb.tb_frame.f_code.co_name, tb.tb_frame.f_locals['half'])"
    )
    assert ex.stdout.strip() == "halve 2"


# -- picker --------------------------------------------------------------------------


def test_picker_is_bound_both_ways(kn):
    ex = kn.ok("p = ns.picker()\np")
    radios = models(ex.messages, "RadioButtonsModel")
    assert len(radios) == 1
    radio_id, history = next(iter(radios.items()))
    names = history[0][0]["_options_labels"]
    assert names[:3] == ["sync", "threads", "processes"] and names[-1] == "(other)"
    assert history[0][0]["index"] == names.index("threads")
    # The hints are a column of their own, one row per button, "(other)" explained.
    hints = [s["value"] for h in models(ex.messages, "HTMLModel").values() for s, _ in h]
    hint_rows = next(v for v in hints if "releases the GIL" in v or "release the GIL" in v)
    assert hint_rows.count("<div") == len(names)
    assert "an executor or get function set in code" in hint_rows and "none set now" in hint_rows
    dropdown_id, dropdown = next(iter(models(ex.messages, "DropdownModel").items()))
    # Default ("auto") values select an option: ipywidgets shows a None value as blank.
    assert dropdown[0][0]["index"] == 0 and dropdown[0][0]["_options_labels"][0].startswith("auto")
    toggle = [h[0][0] for h in models(ex.messages, "ToggleButtonsModel").values()]
    assert {(t["_options_labels"][t["index"]], t["description"]) for t in toggle} == {
        ("auto", "progress"),
        ("auto", "rerun"),
        ("off", "cache"),  # the result cache's choice, off by default
    }
    # The text a reader without widgets gets: short (ipywidgets keeps 110 characters), true.
    text = ex.result["text/plain"]
    assert text.startswith("notebook_sched picker: scheduler threads, workers auto,")
    assert len(text) < 110

    # config -> widget: a %schedule change is sent to the front end
    ex = kn.ok("%schedule processes --workers 3")
    updates = widget_states(ex.messages)
    assert {"index": names.index("processes")} in [s for s, _ in updates[radio_id]]
    workers_labels = dropdown[0][0]["_options_labels"]
    assert {"index": workers_labels.index("3")} in [s for s, _ in updates[dropdown_id]]

    # widget -> config: a click in the front end changes the next compute's scheduler
    kn.comm_msg(radio_id, {"index": names.index("sync")})
    ex = kn.ok(
        "from notebook_sched.events import Observer\n"
        "class Seen(Observer):\n"
        "    def graph_started(self, run):\n"
        "        print('ran on', run.scheduler)\n"
        "ns.get({'a': 1}, 'a', observers=[Seen()])\n"
        "print(repr(p))"
    )
    assert ex.stdout.splitlines()[0] == "ran on sync"
    assert ex.stdout.splitlines()[1].startswith("notebook_sched picker: scheduler sync, workers 3")

    # widget -> config: "auto" in the widgets is None (automatic) in the config
    kn.comm_msg(dropdown_id, {"index": 0})
    assert config_of(kn)[1] is None
    kn.ok("p.close()")


# -- output routing -------------------------------------------------------------------


def test_task_output_lands_in_the_cell_that_started_it(kn):
    first = kn.ok(
        "import threading, time\n"
        "started = threading.Event()\n"
        "def chatty(x):\n"
        "    started.set()\n"
        "    time.sleep(1.0)\n"
        "    print('late output from task', x)\n"
        "    return x\n"
        "bg = threading.Thread(target=ns.get, args=({'c': (chatty, 1)}, 'c'),"
        " kwargs={'scheduler': 'threads'})\n"
        "bg.start()\n"
        "assert started.wait(10)"
    )
    second = kn.ok("time.sleep(2.0)\nbg.join(10)\nprint('second cell')")
    assert second.stdout == "second cell\n"
    late = [m for m in kn.drain(1.0) if m["msg_type"] == "stream"]
    late += first.of_type("stream")
    assert [m["content"]["text"] for m in late] == ["late output from task 1\n"]
    assert late[0]["parent_header"]["msg_id"] == first.msg_id


def test_elapsed_time_of_module_is_modest(kernel):
    # A guard against a slow kernel making the whole module crawl: a trivial cell is fast.
    start = time.monotonic()
    kernel.ok("1 + 1")
    assert time.monotonic() - start < 5.0
