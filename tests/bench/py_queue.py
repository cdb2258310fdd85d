#!/usr/bin/env python3
"""py_queue.py - multiprocessing.Queue throughput, dmp's reference.

One producer process puts N bytes objects into a multiprocessing.Queue;
the main process gets them. Clocked like tests/bench/bench_ring.c: from
before the producer starts to the last get; the median of RUNS runs.
64 B and 4 KiB items, standard library only, default start method.

Prints `name value unit` lines:
  py_queue_{64B,4KiB}_rate   items per second
  py_queue_{64B,4KiB}_bw     MB/s of payload
"""
import multiprocessing as mp
import statistics
import time

RUNS = 3
CASES = [("64B", 64, 200_000), ("4KiB", 4096, 100_000)]


def produce(q, size, n):
    item = b"x" * size
    for _ in range(n):
        q.put(item)


def run(size, n):
    q = mp.Queue()
    p = mp.Process(target=produce, args=(q, size, n))
    t0 = time.perf_counter()
    p.start()
    for _ in range(n):
        q.get()
    took = time.perf_counter() - t0
    p.join()
    return n / took


def main():
    print(f"# python {mp.get_start_method()} start method, "
          f"median of {RUNS} runs", flush=True)
    for label, size, n in CASES:
        rate = statistics.median(run(size, n) for _ in range(RUNS))
        print(f"py_queue_{label}_rate {rate:.0f} msg/s")
        print(f"py_queue_{label}_bw {rate * size / 1e6:.1f} MB/s", flush=True)


if __name__ == "__main__":
    main()
