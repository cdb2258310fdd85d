#!/usr/bin/env python3
"""py_pool.py - multiprocessing.Pool throughput, dmp's reference.

The same operations as tests/bench/bench_pool.c, with a Pool of the
default size (os.cpu_count() workers) and the default start method:
map of a trivial function with the default chunksize and with chunksize
1, and apply_async of a trivial function (all submitted, then every get).
Each figure is the median of RUNS runs after a warm-up.

Prints `name value unit` lines:
  py_pool_map_trivial_rate    tasks per second, default chunksize
  py_pool_map_cs1_rate        tasks per second, chunksize 1
  py_pool_apply_async_rate    tasks per second
"""
import multiprocessing as mp
import statistics
import time

RUNS = 3
N_MAP = 1_000_000
N_CS1 = 50_000
N_APPLY = 20_000


def nop(x):
    return x


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    with mp.Pool() as pool:
        print(f"# python {mp.get_start_method()} start method, pool of "
              f"{pool._processes} workers, median of {RUNS} runs", flush=True)
        big, cs1 = list(range(N_MAP)), list(range(N_CS1))
        pool.map(nop, range(2000), 1)
        a, b, c = [], [], []
        for _ in range(RUNS):
            a.append(timed(lambda: pool.map(nop, big)))
            b.append(timed(lambda: pool.map(nop, cs1, 1)))
            c.append(timed(lambda: [r.get() for r in
                                    [pool.apply_async(nop, (7,))
                                     for _ in range(N_APPLY)]]))
        print(f"py_pool_map_trivial_rate {N_MAP / statistics.median(a):.0f} "
              "task/s")
        print(f"py_pool_map_cs1_rate {N_CS1 / statistics.median(b):.0f} "
              "task/s")
        print(f"py_pool_apply_async_rate "
              f"{N_APPLY / statistics.median(c):.0f} task/s", flush=True)


if __name__ == "__main__":
    main()
