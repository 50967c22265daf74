"""The worker budget: how many tasks this process's runs may run at once, and who
gets the next free slot.

Background jobs (``background/``) run beside the cell's own computes.  Without a
common budget each ``threads`` run would start its own ``num_workers`` threads and
two jobs plus a foreground compute would keep three times as many busy.  So every
run that can run tasks in parallel joins the one :data:`BUDGET` as a
:class:`Member`:

* a ``threads`` run: its worker threads take a slot before each task and give it
  back after (``threads.py``);
* a lease of the process pool: the workers lent to it are its busy slots
  (``_pool.py`` lends and takes back whole workers, by the targets computed here);
* an ``auto`` run: its thread tasks and its busy worker processes together;
* a ``sync`` run in a background job: its one thread, task by task.

**Targets.**  The capacity is the largest ``num_workers`` of the members (so the
busy total stays at ``num_workers`` when they agree; a ``sync`` job holds at most
one slot but asks for the configured ``num_workers``).  Foreground members (a cell's
compute) are served first, up to their own ``num_workers``: a compute started while
jobs run gets its share at once.  Background members share what is left equally;
when it does not divide (three jobs, two workers) the odd slots go to the members
that took fewest tasks since the members last changed, so the spare slot turns
round between them instead of staying with the oldest job.  A member may take a
slot when the busy total is below the capacity and it is below its target, or
nobody else is waiting for one (no slot idles while some run has work).

**Alone costs nothing.**  While a run is the only member it is not ``capped``: its
threads run exactly as before, with no slot taken (``threads.py`` reads one
attribute per task).  When a second member joins, every member is capped and the
threads take slots from their next task on; until then the tasks they are running
count as busy (``Member.running``), so the newcomer does not start beside them.

**Nested computes do not wait on themselves.**  The threads that run a member's
tasks mark their context (:data:`IN_TASK`, once per thread, not per task); a run
started there (a task calling ``compute``, or submitting a job it then waits for)
does not join: it runs under its caller's slot, uncounted.  Otherwise a task waiting
on its own nested run could hold the last slot that nested run needs.

``cond`` guards every member's fields and the member list; the process pool uses
the same condition for its workers (one lock, so a lease's targets and the workers
it holds never disagree).
"""

from __future__ import annotations

import contextvars
import threading

__all__ = ["BUDGET", "Budget", "Member", "IN_TASK", "BACKGROUND", "WAIT_POLL"]

WAIT_POLL = 0.05  # seconds between checks of a run waiting for a slot (interrupts pass)

# True in background jobs' threads (set by background/job.py, inherited by the threads a
# job starts): their members are served after the foreground's.
BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "notebook_sched_background", default=False
)
# True in the threads that run tasks of a counted run (and the contexts copied from
# them): a run started there is nested in a task and does not join.
IN_TASK: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "notebook_sched_in_task", default=False
)


class Member:
    """One run's account in the budget (see the module docstring)."""

    __slots__ = (
        "budget",
        "limit",
        "size",
        "background",
        "busy",
        "served",
        "waiting",
        "capped",
        "order",
        "running",
    )

    def __init__(
        self, budget: Budget | None, limit: int, background: bool, order: int = 0, size: int = 0
    ):
        self.budget = budget  # None: detached (a nested run), never capped
        self.limit = max(1, limit)  # most slots it may hold
        self.size = max(self.limit, size)  # the num_workers it asks the budget for
        self.background = background
        self.busy = 0  # slots held now
        self.served = 0  # tasks (or batches' tasks) taken since the members last changed
        self.waiting = 0  # threads (or a lease) waiting for a slot
        self.capped = False  # another member exists: take slots
        self.order = order
        # () -> tasks running now, slot or not (a threads run that was alone took none)
        self.running = None

    def __repr__(self) -> str:
        kind = "background" if self.background else "foreground"
        return f"<Member {kind} busy={self.busy} limit={self.limit} served={self.served}>"

    def load(self) -> int:
        """Slots in use: those taken, or the tasks running when more (under cond)."""
        running = self.running
        return self.busy if running is None else max(self.busy, running())

    def try_take(self) -> bool:
        """Take a slot if the budget allows it now."""
        budget = self.budget
        if budget is None:
            return True
        with budget.cond:
            if not budget.allowed(self, budget.targets()):
                return False
            self.busy += 1
            self.served += 1
        return True

    def give(self) -> None:
        """Give back a slot taken by :meth:`try_take`."""
        budget = self.budget
        if budget is None:
            return
        with budget.cond:
            self.busy -= 1
            budget.cond.notify_all()

    def take(self, timeout: float = WAIT_POLL) -> bool:
        """Wait for a slot and take it (False after ``timeout`` without one), counted
        as waiting meanwhile so the others leave it its share."""
        budget = self.budget
        if budget is None:
            return True
        with budget.cond:
            self.waiting += 1
            try:
                if not budget.allowed(self, budget.targets()):
                    budget.cond.wait(timeout)
                    if not budget.allowed(self, budget.targets()):
                        return False
                self.busy += 1
                self.served += 1
                return True
            finally:
                self.waiting -= 1

    def wait_turn(self, timeout: float = WAIT_POLL) -> None:
        """Wait until a slot may be free for this member (or ``timeout``), counted as
        waiting meanwhile so the others leave it its share."""
        budget = self.budget
        if budget is None:
            return
        with budget.cond:
            self.waiting += 1
            try:
                if not budget.allowed(self, budget.targets()):
                    budget.cond.wait(timeout)
            finally:
                self.waiting -= 1

    def allowance(self, busy: int) -> int:
        """For a run that counts its own busy slots (``auto``): how many more tasks it
        may start now (``limit - busy`` while alone), reserved for it until it
        :meth:`settles` what it started."""
        budget = self.budget
        if budget is None or not self.capped:
            self.busy = busy
            return self.limit - busy
        with budget.cond:
            if busy < self.busy:
                budget.cond.notify_all()  # slots came free: waiters may take them
            self.busy = busy
            targets = budget.targets()
            room = budget.capacity() - sum(m.load() for m in budget.members)
            cap = targets[self] if budget.others_waiting(self, targets) else self.limit
            free = max(0, min(cap - busy, room))
            self.busy = busy + free
            return free

    def settle(self, busy: int, started: int, wanting: bool) -> None:
        """After an :meth:`allowance`: ``busy`` slots in use, ``started`` tasks begun
        (the turns), and whether tasks wait for a slot."""
        budget = self.budget
        if budget is None:
            return
        with budget.cond:
            if busy < self.busy:
                budget.cond.notify_all()
            self.busy = busy
            self.served += started
            self.waiting = 1 if wanting else 0

    def wake(self) -> None:
        """Wake the threads waiting for a slot (this run ended: they may leave)."""
        budget = self.budget
        if budget is not None and self.capped:
            with budget.cond:
                budget.cond.notify_all()

    def leave(self) -> None:
        if self.budget is not None:
            self.budget.leave(self)

    def __enter__(self) -> Member:
        return self

    def __exit__(self, *exc_info) -> None:
        self.leave()


class Budget:
    """Every member of this process (see the module docstring)."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())  # guards members and their fields
        self.members: list[Member] = []  # oldest first
        self._joined = 0

    def join(self, limit: int, background: bool, counted: bool = True, size: int = 0) -> Member:
        """A member for a run of ``num_workers=limit`` (``size``: the capacity it asks
        for when larger, a ``sync`` job's ``num_workers``); detached (uncounted) when
        the calling thread runs a task (a nested run) or ``counted`` is False."""
        if not counted or IN_TASK.get():
            return Member(None, limit, background, size=size)
        with self.cond:
            self._joined += 1
            member = Member(self, limit, background, self._joined, size)
            self.members.append(member)
            self._changed()
        return member

    def leave(self, member: Member) -> None:
        with self.cond:
            if member in self.members:
                self.members.remove(member)
                member.capped = False
                self._changed()

    def _changed(self) -> None:
        """Members came or went (under cond): cap them all or none, restart the turns."""
        capped = len(self.members) > 1
        for member in self.members:
            member.capped = capped
            member.served = 0
        self.cond.notify_all()

    def capacity(self) -> int:
        return max((m.size for m in self.members), default=1)

    def targets(self) -> dict:
        """Each member's fair number of slots now (under cond; see the module docstring)."""
        targets = {member: 0 for member in self.members}
        left = self.capacity()
        for group in (False, True):  # foreground members first, then background ones
            active = [m for m in self.members if m.background is group]
            active.sort(key=lambda m: (m.served, m.order))  # fewest tasks taken first
            while left and active:
                share = left // len(active)
                if share == 0:  # the odd slots: to those that took fewest
                    for member in active[:left]:
                        targets[member] += 1
                    left = 0
                    break
                for member in active:
                    give = min(share, member.limit - targets[member])
                    targets[member] += give
                    left -= give
                active = [m for m in active if targets[m] < m.limit]
        return targets

    def allowed(self, member: Member, targets: dict) -> bool:
        """May ``member`` take one more slot now (under cond)?"""
        load = member.load()
        if load >= member.limit:
            return False
        if sum(m.load() for m in self.members) >= self.capacity():
            return False
        if load < targets.get(member, 0):
            return True
        return not self.others_waiting(member, targets)

    def others_waiting(self, member: Member, targets: dict) -> bool:
        """Does another member wait for a slot it is owed (under cond)?"""
        return any(
            other.waiting and other.load() < targets[other]
            for other in self.members
            if other is not member
        )


BUDGET = Budget()
