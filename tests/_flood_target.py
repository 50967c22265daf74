"""A cluster in a process of its own, for the connection-flood tests of
test_hostile_cluster.py: ``python _flood_target.py FD_LIMIT`` prints ``ready ADDRESS``
then answers commands on stdin, one JSON line each:

``stats``        threads (OS), open fds, CPU seconds so far, warnings logged
``compute``      kill the worker (its replacement must connect) and compute
``hog N``        open files until only N descriptors are left (the user's own code)
``unhog``        close them
"""

import json
import logging
import os
import resource
import sys
import threading


def main() -> None:
    limit = int(sys.argv[1])
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )
    lines = []

    class Count(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logging.getLogger("notebook_sched.distributed").addHandler(Count())
    from notebook_sched.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, worker_timeout=None)
    client = Client(cluster)
    hogs = []
    print("ready", cluster.scheduler.address, flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "stats":
            with open("/proc/self/status") as f:
                threads = next(int(x.split()[1]) for x in f if x.startswith("Threads:"))
            answer = {
                "threads": threads,
                "python_threads": threading.active_count(),
                "fds": len(os.listdir("/proc/self/fd")),
                "cpu": sum(os.times()[:2]),
                "log_lines": len(lines),
            }
        elif command[0] == "compute":
            pid = cluster.pids[0]
            os.kill(pid, 9)
            value = client.get({"a": 20, "b": (sum, ["a", "a", 2])}, "b")
            answer = {"value": value, "replaced": pid not in cluster.pids}
        elif command[0] == "hog":
            try:
                while True:
                    hogs.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            for _ in range(int(command[1])):
                os.close(hogs.pop())
            answer = {"hogged": len(hogs)}
        elif command[0] == "unhog":
            while hogs:
                os.close(hogs.pop())
            answer = {}
        else:
            break
        print(json.dumps(answer), flush=True)
    client.close()
    cluster.close()


if __name__ == "__main__":
    main()
