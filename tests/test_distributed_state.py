"""The distributed scheduler's state machine, driven without threads or sockets.

``Sim`` plays the workers: it applies the operations the state emits (compute,
release, where, send), runs tasks with ``engine.run_spec`` on per-worker data dicts
(fetching a missing input from whichever simulated worker holds it) and reports back
with the same stimuli the real I/O thread uses.
"""

from __future__ import annotations

import operator

from notebook_sched.distributed.protocol import pack, unpack
from notebook_sched.distributed.state import (
    ERRED,
    MEMORY,
    PROCESSING,
    KilledWorker,
    SchedulerState,
)
from notebook_sched.engine import run_spec
from notebook_sched.graph import compile_graph, flatten_keys
from notebook_sched.measure import sizeof


def inc(x):
    return x + 1


def boom(x):
    return x / 0


class Target:
    """Records notices, as client-side objects would receive them."""

    def __init__(self):
        self.notices = []

    def notify(self, kind, payload=None):
        self.notices.append((kind, payload))

    def kinds(self):
        return [kind for kind, _ in self.notices]

    def data(self):
        return [unpack(v) for v in next(p for k, p in self.notices if k == "data")]


class Sim:
    def __init__(self, nworkers=2):
        self.state = SchedulerState()
        self.data = {}
        self.queue = {}
        self.messages = []  # (wid, ops) as they would be sent
        for wid in range(nworkers):
            self.add_worker(wid)

    def add_worker(self, wid):
        self.data[wid] = {}
        self.queue[wid] = []
        self.state.add_worker(wid, f"w{wid}", 1, f"addr-{wid}")

    def pump(self):
        """Dispatch and deliver every operation; returns them."""
        self.state.dispatch()
        out = self.state.take_outbox()
        for wid, ops in out.items():
            self.messages.append((wid, ops))
            for op, items in ops:
                getattr(self, f"_op_{op}")(wid, items)
        for target, kind, payload in self.state.take_notices():
            target.notify(kind, payload)
        return {
            wid: [(op, items) for op, items in ops if op != "peers"] for wid, ops in out.items()
        }

    def _op_compute(self, wid, items):
        self.queue[wid].extend(items)

    def _op_release(self, wid, tids):
        for tid in tids:
            self.data[wid].pop(tid, None)
            self.queue[wid] = [item for item in self.queue[wid] if item[0] != tid]

    def _op_where(self, wid, items):
        pass

    def _op_peers(self, wid, items):
        pass

    auto_steal = True

    def _op_steal(self, wid, tids):
        """Give back every stolen task not run yet (all of them: the Sim runs nothing
        concurrently), unless a test answers steals itself."""
        if self.auto_steal:
            queued = {item[0] for item in self.queue[wid]}
            given = [tid for tid in tids if tid in queued]
            self.queue[wid] = [item for item in self.queue[wid] if item[0] not in given]
            self.state.handle_stolen(wid, given)

    def _op_send(self, wid, items):
        found = [(rid, tid, pack(self.data[wid][tid])) for rid, tid in items]
        self.state.handle_data(wid, found, [], [])

    def step(self, wid, limit=None):
        """Run the runnable tasks queued on ``wid`` (inputs fetched from peers)."""
        done, values = [], {}
        ran = 0
        progress = True
        while progress and (limit is None or ran < limit):
            progress = False
            for item in list(self.queue[wid]):
                tid, spec, deps, _prio, _remote, send_back = item
                visible = self._visible(wid, deps)
                if visible is None:
                    continue
                self.queue[wid].remove(item)
                try:
                    value = run_spec(spec, visible)
                except Exception as exc:
                    self.state.handle_done(wid, done, values)
                    self.state.handle_error(wid, tid, exc, "traceback")
                    return
                self.data[wid][tid] = value
                done.append((tid, sizeof(value), 0.0, 0.001))
                if send_back:
                    values[tid] = pack(value)
                ran += 1
                progress = True
                break
        if done:
            self.state.handle_done(wid, done, values)

    def _visible(self, wid, deps):
        out = {}
        for dep in deps:
            for holder in [wid] + [w for w in self.data if w != wid]:
                if dep in self.data[holder]:
                    out[dep] = self.data[holder][dep]
                    break
            else:
                return None
        return out

    def run(self, rounds=200):
        for _ in range(rounds):
            self.pump()
            if not any(self.queue.values()):
                break
            for wid in list(self.queue):
                self.step(wid)
        self.pump()

    def kill(self, wid, executing=()):
        del self.data[wid]
        del self.queue[wid]
        self.state.remove_worker(wid, -9, list(executing))


def add_run(sim, dsk, keys, run_id=1, events=False):
    graph = compile_graph(dsk, flatten_keys(keys))
    target = Target()
    base = sim.state.add_run(run_id, graph, target, events)
    return graph, target, base


def chain(n):
    dsk = {"c0": 0}
    for i in range(1, n):
        dsk[f"c{i}"] = (inc, f"c{i - 1}")
    return dsk


def tree(leaves):
    dsk = {("l", i): i for i in range(leaves)}
    names = [("l", i) for i in range(leaves)]
    level = 0
    while len(names) > 1:
        level += 1
        new = []
        for j in range(0, len(names), 2):
            dsk[("t", level, j)] = (operator.add, names[j], names[j + 1])
            new.append(("t", level, j))
        names = new
    return dsk, names[0]


def test_a_chain_goes_to_one_worker_in_one_message():
    sim = Sim(2)
    _, target, _ = add_run(sim, chain(50), "c49")
    out = {wid: ops for wid, ops in sim.pump().items() if ops}
    assert list(out) in ([0], [1])  # one worker
    ops = out[next(iter(out))]
    computes = [item for op, items in ops if op == "compute" for item in items]
    assert len(computes) == 50
    sim.run()
    assert target.data() == [49]


def test_tree_subtrees_are_assigned_with_their_leaves():
    sim = Sim(2)
    dsk, root = tree(64)
    graph, target, base = add_run(sim, dsk, root)
    sim.state.queue_target = 64
    sim.pump()
    # Every task sent at once was sent to the worker holding its inputs.
    where = {}
    for wid, ops in sim.messages:
        for op, items in ops:
            if op == "compute":
                for tid, _spec, deps, *_ in items:
                    where[tid] = wid
                    assert all(where.get(d, wid) == wid for d in deps)
    assert len(where) > 64  # internal nodes went out with their leaves
    sim.run()
    assert target.data() == [sum(range(64))]


def test_a_dependent_runs_where_its_large_input_is():
    for big_on, small_on in ((0, 1), (1, 0)):
        sim = Sim(2)
        watcher = Target()
        sim.state.scatter([("big", bytes(10_000_000), big_on), ("small", b"x", small_on)])
        sim.state.acquire("big", watcher)
        sim.state.acquire("small", watcher)
        sim.run()
        sim.state.submit([("user", operator.add, (None, None), ((0, "big"), (1, "small")))])
        out = sim.pump()
        computes = [
            (wid, item)
            for wid, ops in out.items()
            for op, items in ops
            if op == "compute"
            for item in items
        ]
        assert [wid for wid, _ in computes] == [big_on]
        small = sim.state.named["small"]
        assert computes[0][1][4] == ((small.tid, small_on),)  # fetched from its holder
        del watcher


def test_results_are_released_when_no_longer_needed():
    sim = Sim(1)
    graph, target, base = add_run(sim, chain(5), "c4")
    sim.run()
    released = {
        tid for _, ops in sim.messages for op, items in ops if op == "release" for tid in items
    }
    assert released == {base + graph.index[f"c{i}"] for i in range(4)}
    assert sim.data[0] == {base + graph.index["c4"]: 4}
    sim.state.release_run(1)
    sim.pump()
    assert sim.data[0] == {}
    assert sim.state.tasks == {}


def test_lost_results_are_recomputed_from_the_graph():
    sim = Sim(2)
    dsk = chain(6)
    dsk["other"] = (inc, 100)
    dsk["total"] = (operator.add, "c5", "other")
    graph, target, base = add_run(sim, dsk, "total")
    sim.pump()
    holder = sim.state.tasks[base + graph.index["c0"]].worker.wid
    sim.step(holder)  # the chain is done and its end is in memory on `holder`
    sim.pump()
    c5 = sim.state.tasks[base + graph.index["c5"]]
    assert c5.state == MEMORY
    sim.kill(holder)
    assert c5.state != MEMORY
    sim.run()
    assert target.data() == [5 + 101]


def test_a_task_that_kills_three_workers_fails_with_killed_worker():
    sim = Sim(2)
    graph, target, base = add_run(sim, {"x": 1, "bad": (inc, "x")}, "bad")
    tid = base + graph.index["bad"]
    for n in range(3):
        sim.pump()
        ts = sim.state.tasks[tid]
        assert ts.state == PROCESSING
        sim.kill(ts.worker.wid, executing=[tid])
        sim.add_worker(10 + n)
    sim.pump()
    assert sim.state.tasks[tid].state == ERRED
    failed = [p for k, p in target.notices if k == "failed"]
    assert failed and failed[0][0] == graph.index["bad"]
    error = failed[0][1][0]
    assert isinstance(error, KilledWorker)
    assert "'bad'" in str(error) and "3 different workers" in str(error)
    assert "SIGKILL" in str(error)
    assert str(error).count("SIGKILL") == 1  # three workers with the same exit: said once


def test_a_task_queued_behind_a_killer_is_not_blamed():
    sim = Sim(1)
    graph, target, base = add_run(sim, {"a": (inc, 1), "b": (inc, 2)}, ["a", "b"])
    sim.pump()
    a, b = (sim.state.tasks[base + graph.index[k]] for k in ("a", "b"))
    sim.kill(0, executing=[a.tid])
    sim.add_worker(1)
    assert a.deaths and not b.deaths
    sim.run()
    assert target.data() == [2, 3]


def test_failure_keeps_inputs_and_fails_dependents():
    sim = Sim(1)
    dsk = {"x": 3, "y": (inc, "x"), "bad": (boom, "y"), "z": (inc, "bad")}
    graph, target, base = add_run(sim, dsk, "z")
    sim.run()
    assert "failed" in target.kinds()
    index, error = next(p for k, p in target.notices if k == "failed")
    assert graph.keys[index] == "bad"
    assert isinstance(error[0], ZeroDivisionError)
    y = sim.state.tasks[base + graph.index["y"]]
    assert y.state == MEMORY  # kept so the failure can be inspected with its inputs
    assert sim.state.tasks[base + graph.index["z"]].state == ERRED


def test_futures_are_released_with_their_last_reference():
    sim = Sim(1)
    watcher = Target()
    sim.state.submit([("a", inc, (1,), ())])
    sim.state.acquire("a", watcher)
    sim.state.submit([("b", inc, (None,), ((0, "a"),))])
    sim.state.acquire("b", watcher)
    sim.run()
    assert watcher.kinds().count("finished") == 2
    sim.state.release("a", watcher)
    sim.pump()
    assert "a" in sim.state.named  # b may need it to be recomputed
    sim.state.release("b", watcher)
    sim.pump()
    assert sim.state.named == {} and sim.state.tasks == {}
    assert sim.data[0] == {}


def test_paused_worker_takes_no_root_tasks():
    sim = Sim(2)
    sim.state.set_paused(0, True)
    dsk = {f"t{i}": (inc, i) for i in range(20)}
    _, target, _ = add_run(sim, dsk, list(dsk))
    out = sim.pump()
    assert list(out) == [1] or all(op != "compute" for op, _ in out.get(0, [])), (
        "a paused worker got tasks"
    )
    sim.run()
    assert target.data() == [i + 1 for i in range(20)]


def test_cancel_forgets_dependents_and_tells_watchers():
    sim = Sim(1)
    watcher = Target()
    sim.state.submit([("a", inc, (1,), ()), ("b", inc, (None,), ((0, "a"),))])
    sim.state.acquire("a", watcher)
    sim.state.acquire("b", watcher)
    sim.pump()
    sim.state.cancel(["a"])
    sim.pump()
    assert watcher.kinds().count("cancelled") == 2
    assert sim.state.named == {}


def test_wide_reductions_dispatch_in_linear_time():
    import time

    sim = Sim(4)
    sim.state.queue_target = 8192
    dsk = {("n", i): (inc, i) for i in range(40_000)}
    dsk["total"] = (sum, [("n", i) for i in range(40_000)])
    add_run(sim, dsk, "total")
    start = time.perf_counter()
    sim.state.dispatch()
    assert time.perf_counter() - start < 0.6  # ~0.05 s; quadratic placement took ~2 s
    assert sum(len(w.processing) for w in sim.state.workers.values()) == 4 * 8192


def test_an_idle_worker_steals_unstarted_root_tasks():
    sim = Sim(2)
    sim.auto_steal = False
    dsk = {f"t{i}": (inc, i) for i in range(8)}
    graph, target, base = add_run(sim, dsk, list(dsk))
    out = sim.pump()
    first = {
        wid: [i[0] for op, items in ops if op == "compute" for i in items]
        for wid, ops in out.items()
    }
    assert len(first[0]) == len(first[1]) == 4
    sim.step(1)  # worker 1 finishes its share; worker 0 has started nothing yet
    out = sim.pump()
    steal = [tid for op, items in out.get(0, []) if op == "steal" for tid in items]
    assert len(steal) == 2 and set(steal) <= set(first[0])
    # Worker 0 gives back one (it started the other meanwhile).
    given, kept = steal
    sim.queue[0] = [item for item in sim.queue[0] if item[0] != given]
    sim.state.handle_stolen(0, [given])
    out = sim.pump()
    assert [i[0] for op, items in out.get(1, []) if op == "compute" for i in items] == [given]
    sim.auto_steal = True
    sim.run()
    assert target.data() == [i + 1 for i in range(8)]


def test_tasks_awaited_on_their_worker_are_not_stolen():
    sim = Sim(2)
    _, target, _ = add_run(sim, chain(10), "c9")
    out = sim.pump()
    holder = next(wid for wid, ops in out.items() if ops)
    out = sim.pump()
    assert not any(op == "steal" for ops in out.values() for op, _ in ops)
    sim.run()
    assert target.data() == [9]
    del holder


def test_scattered_data_lost_with_its_worker_fails_everything_that_needs_it():
    from notebook_sched.distributed.state import CancelledError

    sim = Sim(1)
    watchers = {key: Target() for key in ("x", "y", "z")}
    sim.state.scatter([("x", 1, 0)])
    sim.state.submit([("y", inc, (None,), ((0, "x"),))])
    sim.state.submit([("z", inc, (None,), ((0, "y"),))])
    for key, watcher in watchers.items():
        sim.state.acquire(key, watcher)
    sim.run()
    assert sim.state.named["z"].state == MEMORY  # all three on worker 0
    sim.add_worker(1)
    sim.kill(0)
    sim.pump()
    for key in ("x", "y", "z"):
        assert sim.state.named[key].state == ERRED, key
        kind, error = watchers[key].notices[-1]
        assert kind == "erred" and isinstance(error[0], CancelledError)
        assert "scattered data cannot be recomputed" in str(error[0])
    later = Target()
    sim.state.submit([("w", inc, (None,), ((0, "z"),))])
    sim.state.acquire("w", later)
    sim.pump()
    assert later.notices[-1][0] == "erred"  # a dependent submitted afterwards fails too
