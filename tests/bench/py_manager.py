#!/usr/bin/env python3
"""py_manager.py - multiprocessing managers, dmp's reference.

Manager().dict() set/get from a child process (d[k] = i; d[k], each call
counted), and BaseManager(address, authkey).connect() to a running
manager server (on this host, over tcp), median of RUNS. Standard library
only, default start method.

Prints `name value unit` lines:
  py_manager_dict_setget_child   calls per second
  py_manager_connect_median      ms
"""
import multiprocessing as mp
import statistics
import time
from multiprocessing.managers import BaseManager

OPS = 20000
CONNECTS = 30


def setget(d, ops, out):
    t0 = time.perf_counter()
    for i in range(0, ops, 2):
        d[i % 100] = i
        d[i % 100]
    out.put(ops / (time.perf_counter() - t0))


class Server(BaseManager):
    pass


def main():
    with mp.Manager() as m:
        d = m.dict()
        q = mp.Queue()
        p = mp.Process(target=setget, args=(d, OPS, q))
        p.start()
        rate = q.get()
        p.join()
    print(f"py_manager_dict_setget_child {rate:.0f} op/s")

    server = Server(address=("127.0.0.1", 0), authkey=b"secret")
    server.start()
    times = []
    for _ in range(CONNECTS):
        t0 = time.perf_counter()
        c = Server(address=server.address, authkey=b"secret")
        c.connect()
        times.append((time.perf_counter() - t0) * 1000)
        del c
    server.shutdown()
    print(f"py_manager_connect_median {statistics.median(times):.3f} ms")


if __name__ == "__main__":
    main()
