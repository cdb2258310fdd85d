"""Python multiprocessing: start + join of a trivial process, fork and
spawn start methods, median of N runs, printed as 'name value unit'."""
import multiprocessing as mp
import statistics
import time


def noop():
    pass


def measure(method, runs):
    ctx = mp.get_context(method)
    times = []
    for i in range(runs + 2):
        t0 = time.perf_counter()
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


if __name__ == "__main__":
    print(f"py_process_start_join_fork {measure('fork', 40):.3f} ms")
    print(f"py_process_start_join_spawn {measure('spawn', 10):.3f} ms")
