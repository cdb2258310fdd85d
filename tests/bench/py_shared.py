#!/usr/bin/env python3
"""py_shared.py - multiprocessing.Value and its lock, dmp's reference.

Two processes each do N times `with v.get_lock(): v.value += 1` on one
Value('i'). Clocked like tests/bench/bench_shared.c: both children start,
say they are ready and wait for a go (a RawValue flag); the clock runs from
the go to both joins. The median of RUNS runs; standard library only,
default start method.

Prints `name value unit` lines:
  py_shared_lock_incr_2proc_rate   increments per second
  py_shared_lock_incr_1proc_rate   the same from one process
"""
import multiprocessing as mp
import statistics
import time

RUNS = 3
N = 200_000


def work(v, ready, go, n):
    with ready.get_lock():
        ready.value += 1
    while not go.value:
        pass
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def run(procs, n):
    v = mp.Value("i", 0)
    ready = mp.Value("i", 0)
    go = mp.RawValue("i", 0)
    ps = [mp.Process(target=work, args=(v, ready, go, n)) for _ in range(procs)]
    for p in ps:
        p.start()
    while ready.value < procs:
        time.sleep(0.001)
    t0 = time.perf_counter()
    go.value = 1
    for p in ps:
        p.join()
    took = time.perf_counter() - t0
    assert v.value == procs * n, v.value
    return procs * n / took


def main():
    print(f"# python {mp.get_start_method()} start method, "
          f"median of {RUNS} runs of {N} increments per process", flush=True)
    for procs in (2, 1):
        rate = statistics.median(run(procs, N) for _ in range(RUNS))
        print(f"py_shared_lock_incr_{procs}proc_rate {rate:.0f} incr/s",
              flush=True)


if __name__ == "__main__":
    main()
