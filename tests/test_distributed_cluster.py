"""The local cluster itself: start-up, status views, memory limit, security, transport."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import socket
import struct
import threading
import time
from multiprocessing.connection import AuthenticationError
from multiprocessing.connection import Client as connect

import numpy as np
import pytest

from notebook_sched.distributed import Client, LocalCluster
from notebook_sched.distributed.protocol import Channel, pack, parse_bytes, unpack

from .helpers import alive as _alive
from .helpers import wait_for
from .workloads import busy


def inc(x):
    return x + 1


def make_bytes(n):
    return bytes(n)


def worker_name(*inputs):
    return os.environ["NOTEBOOK_SCHED_WORKER"]


def test_start_views_and_close_leave_nothing_behind(no_leaks):
    start = time.perf_counter()
    cluster = LocalCluster(n_workers=2)
    started = time.perf_counter() - start
    assert started < 5.0  # ~0.2 s here; generous for loaded CI machines
    try:
        workers = cluster.workers
        assert [w.name for w in workers] == ["worker-0", "worker-1"]
        assert all(w.status == "running" and w.pid in cluster.pids for w in workers)
        with Client(cluster) as client:
            future = client.submit(make_bytes, 1000)
            future.result()
            text = str(cluster)
            assert "2 workers" in text and "worker-0" in text and "1 results" in text
            assert "<table>" in cluster._repr_html_() and "worker-1" in cluster._repr_html_()
            assert "workers=2" in repr(cluster) and "futures=1" in repr(client)
        pids = cluster.pids
    finally:
        cluster.close()
    assert cluster.status == "closed"
    for pid in pids:
        wait_for(lambda pid=pid: not _alive(pid))


def test_listens_on_loopback_or_a_private_socket_only():
    with LocalCluster(n_workers=1) as cluster:
        address = cluster.scheduler.address
        peers = cluster.scheduler.call(lambda s: [w.address for w in s.workers.values()])
        for addr in [address, *peers]:
            if isinstance(addr, str):
                directory = os.path.dirname(addr)
                assert os.stat(directory).st_mode & 0o077 == 0  # only this user may enter
            else:
                assert addr[0] == "127.0.0.1"


def test_a_peer_with_a_wrong_key_gets_nothing_and_changes_nothing(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="notebook_sched.distributed")
    with LocalCluster(n_workers=1) as cluster, Client(cluster) as client:
        kept = client.submit(inc, 1)
        assert kept.result() == 2

        def snapshot():
            return cluster.scheduler.call(
                lambda s: (sorted(s.workers), sorted(s.tasks), sorted(s.named))
            )

        before, pids = snapshot(), cluster.pids
        worker_address = cluster.scheduler.call(lambda s: next(iter(s.workers.values())).address)
        for address in (cluster.scheduler.address, worker_address):
            with pytest.raises(AuthenticationError):
                connect(address, authkey=b"not the secret")
        # A peer that skips the handshake and sends a pickle is never unpickled.
        marker = tmp_path / "pwned"
        payload = b"\x00" + pickle.dumps(_Evil(str(marker)))
        for address in (cluster.scheduler.address, worker_address):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
                raw.connect(address)
                raw.sendall(struct.pack("!i", len(payload)) + payload)
                raw.recv(1024)  # the challenge; then the server drops us
        time.sleep(0.2)
        assert not marker.exists()
        assert snapshot() == before and cluster.pids == pids
        assert kept.result() == 2 and client.submit(inc, 5).result() == 6
        assert "failed authentication" in caplog.text


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_large_arrays_travel_out_of_band():
    array = np.arange(2_000_000, dtype=np.float64)
    packed = pack(array)
    assert len(packed[1]) == 1 and packed[1][0].raw().nbytes == array.nbytes
    assert len(packed[0]) < 1000  # the data is not inside the pickle
    left, right = multiprocessing.Pipe()
    sender = threading.Thread(target=Channel(left).send, args=(("data", [packed]),))
    sender.start()
    message = Channel(right).recv()
    sender.join()
    received = unpack(message[1][0])
    np.testing.assert_array_equal(received, array)
    owner = received
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(owner, bytearray | memoryview)  # read straight into its final buffer
    received[0] = -1  # writable, owned by the receiver
    left.close()
    right.close()


def test_numpy_results_round_trip(no_leaks):
    with LocalCluster(n_workers=2) as cluster, Client(cluster) as client:
        future = client.submit(np.arange, 3_000_000)
        doubled = client.submit(np.multiply, future, 2)
        np.testing.assert_array_equal(doubled.result(), np.arange(3_000_000) * 2)


def test_memory_limit_pauses_a_worker(no_leaks):
    with LocalCluster(n_workers=2, memory_limit="1MB") as cluster, Client(cluster) as client:
        big = client.submit(make_bytes, 3_000_000)
        big.result()
        holder = client.who_has([big])[big.key]
        wait_for(lambda: {w.name: w.status for w in cluster.workers}[holder] == "paused")
        others = {w.name for w in cluster.workers} - {holder}
        places = client.gather([client.submit(worker_name, i) for i in range(10)])
        assert set(places) <= others  # the paused worker took no new task
        del big
        wait_for(lambda: all(w.status == "running" for w in cluster.workers))


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="n_workers"):
        LocalCluster(n_workers=0)
    with pytest.raises(ValueError, match="memory_limit"):
        LocalCluster(memory_limit="lots")
    assert parse_bytes("2 GiB") == 2 * 2**30 and parse_bytes("1.5kB") == 1500
    assert parse_bytes(None) is None


def test_threads_per_worker_run_tasks_side_by_side(no_leaks):
    with LocalCluster(n_workers=1, threads_per_worker=2) as cluster, Client(cluster) as client:
        assert cluster.workers[0].nthreads == 2
        start = time.monotonic()
        pids = client.get({f"s{i}": (time.sleep, 0.4) for i in range(2)}, ["s0", "s1"])
        assert pids == (None, None)
        assert time.monotonic() - start < 0.75  # two at a time, not one after the other
        futures = [client.submit(busy, 30.0) for _ in range(2)]
        wait_for(lambda: len(cluster.workers[0].running) == 2)
        client.cancel(futures)
        wait_for(lambda: not cluster.workers[0].running, timeout=3)
        assert client.submit(busy, 0.01).result(timeout=10) == cluster.pids[0]


def _crash(state):
    raise SystemExit("simulated crash of the scheduler thread")


def test_a_crashed_scheduler_thread_raises_instead_of_hanging(no_leaks):
    with LocalCluster(n_workers=1) as cluster, Client(cluster) as client:
        pid = cluster.pids[0]
        slow = client.submit(time.sleep, 30)
        cluster.scheduler.post(_crash)
        start = time.monotonic()
        with pytest.raises(RuntimeError, match="scheduler thread"):
            slow.result()
        assert time.monotonic() - start < 5
        wait_for(lambda: not _alive(pid))  # its worker saw the connection close


def test_an_idle_worker_takes_over_queued_work(no_leaks):
    with LocalCluster(n_workers=2) as cluster, Client(cluster) as client:
        dsk = {"a": (time.sleep, 1.0), "b": (time.sleep, 1.0), "c": (time.sleep, 0.05)}
        dsk["d"] = (time.sleep, 0.05)
        start = time.monotonic()
        client.get(dsk, ["a", "b", "c", "d"])  # a and b first go to the same worker
        assert time.monotonic() - start < 1.6  # not 2 s: the other worker took b
