"""``scheduler="dask"`` past one machine, as near as one machine gets: network namespaces.

The test starts ``dask scheduler`` and two ``dask worker`` processes from the command
line, each in a network namespace of its own, and runs graphs from a real IPython
kernel with ``%%schedule dask --address tcp://<scheduler>:<port>``::

    root namespace (test, kernel)          scheduler ns              worker ns 1
      {tag}a0 10.213.N.1  <--veth-->  {tag}a1 10.213.N.2
                                      {tag}b0 10.213.N+1.1 <--veth--> {tag}b1 10.213.N+1.2
                                      {tag}c0 10.213.N+2.1 <--veth--> {tag}c1 10.213.N+2.2
                                                                       worker ns 2

The scheduler's namespace forwards between the workers' links, so workers reach each
other through it (as hosts behind one router).  Every address is a private test
address on a veth this test made; no traffic leaves the namespaces it creates.  The
test checks the answer, the progress events (which workers ran what), a failed task's
local rerun in the kernel, and that nothing is left: no process, namespace or veth.

It needs root and ``ip`` (iproute2); where namespaces cannot be made it is skipped
with the reason printed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from .kernel_helpers import LAST_TASK_FRAME, models, running_kernel

pytestmark = [pytest.mark.timeout(240)]

PORT = 8786
START_SECONDS = 60.0
TAG = f"nsd{os.getpid() % 10000}"
BLOCK = 10 + 3 * (os.getpid() % 80)  # third octet of the first of three /24s


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=30)


def cannot_make_namespaces() -> str | None:
    """Why this machine cannot run the test, or None."""
    if sys.platform != "linux":
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the `ip` command is missing (apt-get install iproute2)"
    probe = f"{TAG}-probe"
    made = sh("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return None


class Network:
    """Three namespaces joined by veths (see the module docstring); ``close`` undoes all."""

    def __init__(self):
        self.names = {role: f"{TAG}-{role}" for role in ("s", "w1", "w2")}
        self.veths = [f"{TAG}a0", f"{TAG}b0", f"{TAG}c0"]  # deleting one end removes both
        self.scheduler_ip = f"10.213.{BLOCK}.2"  # as the root namespace sees it
        self.worker_ips = [f"10.213.{BLOCK + 1}.2", f"10.213.{BLOCK + 2}.2"]
        self.links = {  # worker -> the scheduler's address on the worker's link
            "w1": f"10.213.{BLOCK + 1}.1",
            "w2": f"10.213.{BLOCK + 2}.1",
        }

    def open(self) -> None:
        s = self.names["s"]
        for name in self.names.values():
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        self._pair(f"{TAG}a0", None, f"10.213.{BLOCK}.1", f"{TAG}a1", s, self.scheduler_ip)
        for n, (worker, letter) in enumerate((("w1", "b"), ("w2", "c"))):
            self._pair(
                f"{TAG}{letter}0",
                s,
                self.links[worker],
                f"{TAG}{letter}1",
                self.names[worker],
                self.worker_ips[n],
            )
            sh("ip", "-n", self.names[worker], "route", "add", "default", "via", self.links[worker])
        sh("ip", "netns", "exec", s, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")

    def _pair(self, end0, ns0, ip0, end1, ns1, ip1) -> None:
        sh("ip", "link", "add", end0, "type", "veth", "peer", "name", end1)
        for end, ns, ip in ((end0, ns0, ip0), (end1, ns1, ip1)):
            if ns is not None:
                sh("ip", "link", "set", end, "netns", ns)
            prefix = ("ip", "-n", ns) if ns else ("ip",)
            sh(*prefix, "addr", "add", f"{ip}/24", "dev", end)
            sh(*prefix, "link", "set", end, "up")

    def pids(self) -> set[int]:
        found = set()
        for name in self.names.values():
            out = sh("ip", "netns", "pids", name, check=False).stdout
            found.update(int(p) for p in out.split())
        return found

    def close(self) -> None:
        for veth in self.veths:
            sh("ip", "link", "del", veth, check=False)
        for name in self.names.values():
            sh("ip", "netns", "exec", name, "ip", "link", "del", f"{TAG}a1", check=False)
            sh("ip", "netns", "del", name, check=False)

    def leftovers(self) -> list[str]:
        namespaces = sh("ip", "netns", "list", check=False).stdout
        links = sh("ip", "-o", "link", "show", check=False).stdout
        left = [n for n in self.names.values() if n in namespaces]
        left += [v for v in self.veths if v in links]
        return left


def dask_cli() -> str:
    return os.path.join(os.path.dirname(sys.executable), "dask")


def start(network: Network, role: str, args: list[str], log_dir) -> subprocess.Popen:
    log = open(log_dir / f"{role}.log", "w")  # noqa: SIM115 - closed with the process
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    command = ["ip", "netns", "exec", network.names[role], dask_cli(), *args]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    process.log = log  # type: ignore[attr-defined]
    process.role = role  # type: ignore[attr-defined]
    return process


def wait_for_port(host: str, port: int, processes: list, deadline: float) -> None:
    while time.monotonic() < deadline:
        for p in processes:
            if p.poll() is not None:
                raise AssertionError(f"{p.args} exited with {p.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on {host}:{port} after {START_SECONDS} s")


def stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        p.log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = cannot_make_namespaces()
    if reason:
        print(f"test_dask_netns skipped: {reason}")
        pytest.skip(reason)
    logs = tmp_path_factory.mktemp("netns-logs")
    network = Network()
    processes: list[subprocess.Popen] = []
    try:
        network.open()
        deadline = time.monotonic() + START_SECONDS
        processes.append(
            start(
                network,
                "s",
                ["scheduler", "--host", "0.0.0.0", "--port", str(PORT), "--no-dashboard"],
                logs,
            )
        )
        wait_for_port(network.scheduler_ip, PORT, processes, deadline)
        for n, worker in enumerate(("w1", "w2")):
            args = ["worker", f"tcp://{network.links[worker]}:{PORT}"]
            args += ["--host", network.worker_ips[n], "--nthreads", "1", "--no-nanny"]
            args += ["--no-dashboard", "--name", worker]
            processes.append(start(network, worker, args, logs))
        yield network, f"tcp://{network.scheduler_ip}:{PORT}", processes
    finally:
        stop(processes)
        in_namespaces = network.pids()
        network.close()
        left = network.leftovers()
        for p in processes:
            print(f"--- {p.role} log (end):\n{(logs / f'{p.role}.log').read_text()[-1500:]}")
        assert not in_namespaces, f"processes left in the namespaces: {in_namespaces}"
        assert not left, f"left behind: {left}"
        assert all(p.returncode is not None for p in processes)


@pytest.fixture(scope="module")
def kernel(cluster):
    with running_kernel(
        "import notebook_sched as ns\n"
        "%load_ext notebook_sched\n"
        "from notebook_sched.events import Observer\n"
        "class Recorder(Observer):\n"
        "    def __init__(self):\n"
        "        self.events = []\n"
        "    def graph_started(self, run):\n"
        "        self.events.append(('graph', run.scheduler, run.tasks))\n"
        "    def task_started(self, key, worker):\n"
        "        self.events.append(('started', key, worker))\n"
        "    def task_finished(self, key, worker, start, stop):\n"
        "        self.events.append(('finished', key, worker))\n"
        "    def task_failed(self, key, worker, error):\n"
        "        self.events.append(('failed', key, worker))\n"
        "recorder = Recorder()\n"
        "ns.events.register(recorder)\n"
    ) as k:
        yield k


def test_workers_in_their_namespaces_join_the_scheduler(cluster, kernel):
    network, address, _ = cluster
    ex = kernel.ok(
        "from distributed import Client\n"
        f"with Client({address!r}, timeout='20s') as c:\n"
        "    c.wait_for_workers(2, timeout=60)\n"
        "    print(sorted(w.rsplit(':', 1)[0] for w in c.scheduler_info()['workers']))\n",
        timeout=90,
    )
    hosts = [f"tcp://{ip}" for ip in network.worker_ips]
    assert ex.stdout.strip() == repr(sorted(hosts))


def test_graph_runs_on_both_workers_with_progress(cluster, kernel):
    network, address, _ = cluster
    ex = kernel.ok(
        f"%%schedule dask --address {address}\n"
        "import time\n"
        "def slow_square(i):\n"
        "    time.sleep(0.3)\n"
        "    return i * i\n"
        "dsk = {('sq', i): (slow_square, i) for i in range(8)}\n"
        "dsk['n'] = 8\n"  # a literal: no task
        "dsk['total'] = (sum, [('sq', i) for i in range(8)] + ['n'])\n"
        "recorder.events.clear()\n"
        "ns.get(dsk, 'total')",
        timeout=120,
    )
    assert ex.result["text/plain"] == str(sum(i * i for i in range(8)) + 8)
    bars = models(ex.messages, "IntProgressModel")
    assert bars, "no progress bar"
    final = [{k: v for s, _ in history for k, v in s.items()} for history in bars.values()]
    # One bar per task name ("sq", "total"); the literal "n" is no task.
    assert sorted((f["value"], f["max"], f["bar_style"]) for f in final) == [
        (1, 1, "success"),
        (8, 8, "success"),
    ]
    ex = kernel.ok("print(recorder.events)")
    events = eval(ex.stdout)  # our own repr of tuples of str/int: safe here
    assert events[0] == ("graph", "dask", 9)
    finished = [e for e in events if e[0] == "finished"]
    assert len(finished) == 9
    hosts = {e[2].rsplit(":", 1)[0] for e in finished}
    assert hosts == {f"tcp://{ip}" for ip in network.worker_ips}, "both workers ran tasks"
    started = {e[1] for e in events if e[0] == "started"}
    assert started == {e[1] for e in finished}


def test_failed_task_reruns_locally_in_the_kernel(cluster, kernel):
    network, address, _ = cluster
    ex = kernel.execute(
        f"%%schedule dask --address {address}\n"
        "def ratio(rows, factor):\n"
        "    kept = [r for r in rows if r]\n"
        "    return len(kept) / factor\n"
        "dsk = {'rows': (list, [1, 0, 3]), 'factor': (int, 0),\n"
        "       'ratio-1': (ratio, 'rows', 'factor')}\n"
        "ns.get(dsk, 'ratio-1')",
        timeout=120,
    )
    assert ex.status == "error" and ex.error["ename"] == "ZeroDivisionError"
    shown = "\n".join(ex.error["traceback"])
    assert "task 'ratio-1' failed on the 'dask' scheduler (tcp://10.213." in shown
    # The rerun's frames are shown (the worker's are in last_failure().remote_traceback).
    assert "Rerun here with the same inputs, it failed the same way" in shown
    ex = kernel.ok(
        LAST_TASK_FRAME
        + "print(tb.tb_frame.f_code.co_name, sorted(tb.tb_frame.f_locals.items()))\n"
        "print(ns.last_failure().inputs)\n"
        "print([e for e in recorder.events if e[0] == 'failed'])"
    )
    lines = ex.stdout.strip().splitlines()
    assert lines[0] == "ratio [('factor', 0), ('kept', [1, 3]), ('rows', [1, 0, 3])]"
    assert lines[1] == "{'rows': [1, 0, 3], 'factor': 0}"  # gathered from the workers
    failed = eval(lines[2])
    assert [e[1] for e in failed] == ["ratio-1"]
    assert failed[0][2].rsplit(":", 1)[0] in {f"tcp://{ip}" for ip in network.worker_ips}
