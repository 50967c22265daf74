"""The cluster worker's state machine (``worker_state.WorkerMachine``), driven without
threads or sockets: first alone, stimulus by stimulus, then as the workers of a
``SchedulerState`` (``MachineSim``, a sibling of ``test_distributed_state.Sim`` whose
workers are real machines instead of dictionaries).
"""

from __future__ import annotations

import operator

from notebook_sched.distributed.protocol import pack
from notebook_sched.distributed.state import MEMORY, SchedulerState
from notebook_sched.distributed.worker_state import (
    FLUSH_SECONDS,
    WAKE_EXECUTORS,
    WAKE_FETCHER,
    Compute,
    Fetched,
    FetchFailed,
    Interrupt,
    Peers,
    Release,
    Reply,
    SendDone,
    SendError,
    Steal,
    TaskFinished,
    Where,
    WorkerMachine,
)
from notebook_sched.engine import run_spec
from notebook_sched.graph import CALL, VALUE

from .test_distributed_state import add_run, chain, inc, tree

NOW = 1000.0


def call(f, *deps, const=()):
    """A compiled CALL spec reading task ids ``deps`` as its first arguments."""
    return (CALL, f, (None,) * len(deps) + tuple(const), tuple(enumerate(deps)))


def item(tid, spec, deps=(), priority=0, remote=(), send_back=False):
    return (tid, spec, tuple(deps), priority, tuple(remote), send_back)


def run_next(machine, slot=0, now=NOW):
    """Run the next ready task as an executor would; returns (task, instructions)."""
    task = machine.next_task(slot)
    assert task is not None, "nothing ready"
    try:
        value, error = run_spec(task.spec, machine.data), None
    except Exception as exc:
        value, error = None, exc
    return task, list(machine.task_finished(slot, task, value, error, now, now + 1e-6))


def sends(out):
    return [i for i in out if type(i) is SendDone]


# -- the machine alone -----------------------------------------------------------------


def test_ready_tasks_run_in_priority_order_and_report_in_one_message():
    m = WorkerMachine(1, now=NOW)
    out = m.handle(
        Compute([item(t, (VALUE, t * 10), priority=p) for t, p in ((1, 3), (2, 1), (3, 2))], NOW)
    )
    assert out == [WAKE_EXECUTORS]
    order, reports = [], []
    for _ in range(3):
        task, out = run_next(m)
        order.append(task.tid)
        reports += sends(out)
    assert order == [2, 3, 1]  # lowest priority first
    # Nothing was reported while more work was ready; then one batch with all three.
    assert len(reports) == 1
    assert [entry[0] for entry in reports[0].batch] == [2, 3, 1]
    assert m.next_task(0) is None and m.tasks == {} and m.outbox == []
    assert m.data == {1: 10, 2: 20, 3: 30}


def test_the_outbox_is_flushed_after_flush_seconds_even_with_ready_work():
    m = WorkerMachine(1, now=NOW)
    m.compute([item(1, (VALUE, 1)), item(2, (VALUE, 2))], NOW)
    _, out = run_next(m, now=NOW + 2 * FLUSH_SECONDS)
    assert [entry[0] for entry in sends(out)[0].batch] == [1]


def test_a_task_made_ready_here_runs_without_a_round_trip():
    m = WorkerMachine(2, now=NOW)
    m.compute([item(1, (VALUE, 5)), item(2, call(inc, 1), deps=[1], priority=1)], NOW)
    assert m.tasks[2].missing == 1 and m.waiters == {1: [m.tasks[2]]}
    task, out = run_next(m)
    assert task.tid == 1
    assert out == [WAKE_EXECUTORS]  # another executor may take task 2; nothing sent yet
    task, out = run_next(m, slot=1)
    assert task.tid == 2 and m.data[2] == 6
    assert [entry[0] for entry in sends(out)[0].batch] == [1, 2]


def test_a_remote_input_is_fetched_read_and_dropped_after_use():
    m = WorkerMachine(1, now=NOW)
    assert m.handle(Peers([{7: "addr-7"}])) == []
    out = m.handle(Compute([item(2, call(inc, 1), deps=[1], remote=[(1, 7)])], NOW))
    assert out == [WAKE_FETCHER]
    assert m.pop_fetch() == (7, [1], "addr-7")
    assert m.next_task(0) is None  # still waiting for its input
    out = m.handle(Fetched([(1, 41)], [], []))
    assert out == [WAKE_EXECUTORS]
    assert m.copies == {1: 1}
    task, out = run_next(m)
    assert m.data == {2: 42}  # the copy went with its last reader
    assert m.copies == {} and m.bytes_held == m.sizes[2]
    assert [entry[0] for entry in sends(out)[0].batch] == [2]


def test_a_failed_fetch_is_tried_again_later_ever_more_slowly():
    m = WorkerMachine(1, now=NOW)
    m.compute([item(2, call(inc, 1), deps=[1], remote=[(1, 7)])], NOW)
    wid, tids, _ = m.pop_fetch()
    m.handle(FetchFailed(wid, tids, 100.0))
    assert m.fetching == set() and m.to_fetch == {}
    assert 0 < m.due_retries(100.01) <= 0.05  # not due yet
    assert m.to_fetch == {}
    assert m.due_retries(100.06) is None
    assert m.to_fetch == {7: [1]}
    m.pop_fetch()
    m.fetch_failed(7, [1], 200.0)
    m.due_retries(200.06)
    assert m.to_fetch == {}  # the second delay is twice the first
    m.due_retries(200.11)
    assert m.to_fetch == {7: [1]}


def test_a_where_names_a_new_holder_of_a_wanted_input_only():
    m = WorkerMachine(1, now=NOW)
    m.compute([item(2, call(inc, 1), deps=[1])], NOW)
    assert m.handle(Where([(1, 3), (9, 3)])) == [WAKE_FETCHER]
    assert m.to_fetch == {3: [1]}  # 9 is wanted by nobody here


def test_an_input_that_cannot_be_unpickled_fails_its_readers():
    m = WorkerMachine(1, now=NOW)
    m.compute([item(2, call(inc, 1), deps=[1], remote=[(1, 7)])], NOW)
    m.pop_fetch()
    exc = ValueError("bad pickle")
    out = m.handle(Fetched([None], [], [(1, exc)]))
    assert SendError(2, exc) in out
    assert m.tasks == {} and m.waiters == {}


def test_releasing_a_running_task_interrupts_its_slot_and_drops_its_result():
    m = WorkerMachine(2, now=NOW)
    m.compute([item(1, (VALUE, 1)), item(2, (VALUE, 2), priority=1)], NOW)
    first = m.next_task(0)
    second = m.next_task(1)
    assert m.handle(Release([second.tid])) == [Interrupt(1)]
    assert m.task_finished(1, second, None, None, NOW, NOW) == ()
    assert m.handle(TaskFinished(0, first, 1, None, NOW, NOW))
    assert m.data == {1: 1} and m.running == [None, None]
    m.release([1])
    assert m.data == {} and m.bytes_held == 0


def test_steal_gives_back_only_tasks_that_have_not_started():
    m = WorkerMachine(1, now=NOW)
    m.compute([item(t, (VALUE, t), priority=t) for t in (1, 2, 3)], NOW)
    m.compute([item(4, call(inc, 3), deps=[3])], NOW)  # 4 waits here for 3
    started = m.next_task(0)
    assert m.handle(Steal([1, 2, 3])) == [Reply(("stolen", [2]))]
    assert started.tid == 1 and 1 in m.tasks and 3 in m.tasks and 2 not in m.tasks


def test_the_memory_limit_pauses_the_worker_and_releasing_resumes_it():
    m = WorkerMachine(1, memory_limit=1000, now=NOW)
    m.compute([item(1, (VALUE, bytes(5000)))], NOW)
    _, out = run_next(m)
    assert Reply(("paused", True)) in out and m.paused
    assert m.handle(Release([1])) == [Reply(("paused", False))]
    assert not m.paused


def test_a_failed_task_reports_what_is_done_then_its_error():
    m = WorkerMachine(1, now=NOW)
    m.compute([item(1, (VALUE, 1)), item(2, (CALL, operator.truediv, (1, 0), ()), priority=1)], NOW)
    run_next(m)
    task, out = run_next(m)
    assert [type(i) for i in out] == [SendDone, SendError]
    assert [entry[0] for entry in out[0].batch] == [1]
    assert out[1].tid == 2 and isinstance(out[1].exc, ZeroDivisionError)
    assert m.tasks == {} and 2 not in m.data


def test_computing_a_task_whose_copy_is_here_makes_the_copy_home_data():
    m = WorkerMachine(1, now=NOW)
    m.compute([item(2, call(inc, 1), deps=[1], remote=[(1, 7)])], NOW)
    m.pop_fetch()
    m.fetched([(1, 5)], [], [])
    assert m.copies == {1: 1}
    out = m.compute([item(1, (VALUE, 5))], NOW + 1)  # recomputation sent it here
    assert out == [WAKE_EXECUTORS]
    assert 1 not in m.copies and m.outbox[0][0] == 1
    run_next(m)
    assert m.data[1] == 5  # home data now: its reader finishing does not drop it


def test_sends_are_answered_with_what_is_here():
    m = WorkerMachine(1, now=NOW)
    m.data[1] = "one"
    assert m.lookup_requests([(10, 1), (10, 2)]) == ([(10, 1, "one")], [(10, 2)])
    assert m.lookup([1, 2]) == ([(1, "one")], [2])


# -- scheduler state and worker machines together --------------------------------------


class MachineSim:
    """A SchedulerState whose workers are WorkerMachines, wired as the threads would."""

    def __init__(self, nworkers=2, nthreads=1):
        self.state = SchedulerState()
        self.machines: dict = {}
        self.fetches = 0
        for wid in range(nworkers):
            self.add_worker(wid, nthreads)

    def add_worker(self, wid, nthreads=1):
        self.machines[wid] = WorkerMachine(nthreads, now=NOW)
        self.state.add_worker(wid, f"w{wid}", nthreads, f"addr-{wid}")

    def kill(self, wid):
        m = self.machines.pop(wid)
        executing = [task.tid for task in m.running if task is not None]
        self.state.remove_worker(wid, -9, executing)

    def pump(self):
        self.state.dispatch()
        for wid, ops in self.state.take_outbox().items():
            m = self.machines.get(wid)
            for op, items in ops if m is not None else ():
                if op == "send":
                    found, missing = m.lookup_requests(items)
                    found = [(rid, tid, pack(v)) for rid, tid, v in found]
                    self.state.handle_data(wid, found, missing, [])
                else:
                    stimulus = {
                        "compute": lambda i: Compute(i, NOW),
                        "release": Release,
                        "steal": Steal,
                        "where": Where,
                        "peers": Peers,
                    }[op](items)
                    self.apply(wid, m.handle(stimulus))
        for target, kind, payload in self.state.take_notices():
            target.notify(kind, payload)

    def apply(self, wid, out):
        for instruction in out:
            if type(instruction) is SendDone:
                values = instruction.values
                packed = {t: pack(v) for t, v in values.items()} if values else None
                self.state.handle_done(wid, instruction.batch, packed)
            elif type(instruction) is SendError:
                self.state.handle_error(wid, instruction.tid, instruction.exc, "traceback")
            elif type(instruction) is Reply and instruction.message[0] == "stolen":
                self.state.handle_stolen(wid, instruction.message[1])
            elif type(instruction) is Reply:
                self.state.set_paused(wid, instruction.message[1])

    def step(self, wid):
        """The worker's fetcher and executor, until it has nothing runnable."""
        m = self.machines[wid]
        while m.to_fetch:
            peer, tids, address = m.pop_fetch()
            assert address == f"addr-{peer}"
            holder = self.machines.get(peer)
            if holder is None:
                self.apply(wid, m.fetch_failed(peer, tids, NOW))
                continue
            self.fetches += 1
            found, missing = holder.lookup(tids)
            self.apply(wid, m.fetched(found, missing, []))
        while True:
            task = m.next_task(0)
            if task is None:
                break
            try:
                value, error = run_spec(task.spec, m.data), None
            except Exception as exc:
                value, error = None, exc
            self.apply(wid, m.task_finished(0, task, value, error, NOW, NOW))
        if m.outbox:
            self.apply(wid, [SendDone(*m.take_outbox(NOW))])

    def run(self, rounds=200):
        for _ in range(rounds):
            self.pump()
            for wid in list(self.machines):
                self.step(wid)
            busy = any(m.tasks or m.to_fetch for m in self.machines.values())
            if not busy and not self.state.ready_deps and not self.state.root_heap:
                break
        self.pump()


def test_a_tree_runs_across_worker_machines_and_leaves_only_its_result():
    sim = MachineSim(3)
    dsk, root = tree(64)
    graph, target, base = add_run(sim, dsk, root)
    sim.run()
    assert target.data() == [sum(range(64))]
    assert sim.fetches > 0  # inputs travelled between workers
    for m in sim.machines.values():
        assert m.tasks == {} and m.waiters == {} and m.copies == {} and m.outbox == []
    held = {tid for m in sim.machines.values() for tid in m.data}
    assert held == {base + graph.index[root]}
    sim.state.release_run(1)
    sim.pump()
    assert all(m.data == {} and m.bytes_held == 0 for m in sim.machines.values())


def test_a_chain_runs_over_worker_machines():
    sim = MachineSim(2)
    graph, target, base = add_run(sim, chain(30), "c29")
    sim.run()
    assert target.data() == [29]


def test_results_lost_with_a_worker_machine_are_recomputed():
    sim = MachineSim(2)
    dsk = chain(6)
    dsk["other"] = (inc, 100)
    dsk["total"] = (operator.add, "c5", "other")
    graph, target, base = add_run(sim, dsk, "total")
    sim.pump()
    holder = sim.state.tasks[base + graph.index["c0"]].worker.wid
    sim.step(holder)
    sim.pump()
    assert sim.state.tasks[base + graph.index["c5"]].state == MEMORY
    sim.kill(holder)
    sim.add_worker(5)
    sim.run()
    assert target.data() == [5 + 101]
