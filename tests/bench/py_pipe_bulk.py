#!/usr/bin/env python3
"""py_pipe_bulk.py - multiprocessing.Pipe bulk transfer, dmp's reference.

A child process sends 1 MiB messages with Connection.send_bytes; the main
process receives them with recv_bytes. Clocked like tests/bench/
bench_pipe.c: from the "go" the main process sends (the child is started
and waiting) to the last message received; the median of RUNS runs.
Standard library only, default start method.

Prints `name value unit` lines:
  py_pipe_bulk_1MiB_bw   MB/s of payload
"""
import multiprocessing as mp
import statistics
import time

RUNS = 3
SIZE = 1 << 20
COUNT = 300  # messages per run


def send_bulk(conn, size, count):
    payload = b"x" * size
    conn.recv_bytes()  # the go
    for _ in range(count):
        conn.send_bytes(payload)
    conn.close()


def run():
    parent, child = mp.Pipe()
    p = mp.Process(target=send_bulk, args=(child, SIZE, COUNT))
    p.start()
    child.close()
    t0 = time.perf_counter()
    parent.send_bytes(b"go")
    for _ in range(COUNT):
        if len(parent.recv_bytes()) != SIZE:
            raise RuntimeError("short message")
    took = time.perf_counter() - t0
    p.join()
    parent.close()
    return COUNT * SIZE / took / 1e6


def main():
    print(f"# python {mp.get_start_method()} start method, {COUNT} x "
          f"{SIZE} B messages, median of {RUNS} runs", flush=True)
    bw = statistics.median(run() for _ in range(RUNS))
    print(f"py_pipe_bulk_1MiB_bw {bw:.1f} MB/s", flush=True)


if __name__ == "__main__":
    main()
