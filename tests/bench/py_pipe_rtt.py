#!/usr/bin/env python3
"""py_pipe_rtt.py - Python multiprocessing round trips, dmp's reference.

Measures, between two processes on this host, with the standard library
only and the default start method:
  - multiprocessing.Pipe() round trip, 64 B each way;
  - multiprocessing.connection Listener/Client round trip, 64 B, over
    AF_UNIX and over tcp on 127.0.0.1 (authkey set: the HMAC challenge
    runs at connect; messages are not encrypted);
  - a fresh Client(address, authkey) + one round trip + close, over tcp
    and AF_UNIX, the counterpart of dmp's connect + request + destroy.
    Over tcp the first message after the authkey exchange waits for a
    delayed ACK (Nagle is left on), about 40 ms: that is what Python
    users get, so it is reported as measured.

Prints `name value unit` lines (medians, and p99 for round trips), like
the C benchmarks, so tests/bench/run.sh can put them side by side.
"""
import math
import multiprocessing as mp
import os
import statistics
import time
from multiprocessing.connection import Client, Listener, arbitrary_address

WARMUP = 200
ROUNDS = 2000
CONNECTS = 50
PAYLOAD = b"x" * 64
AUTHKEY = os.urandom(32)


def echo(conn):
    """Echo until an empty message."""
    while True:
        data = conn.recv_bytes()
        if not data:
            break
        conn.send_bytes(data)
    conn.close()


def echo_client(address, family, authkey):
    with Client(address, family=family, authkey=authkey) as conn:
        echo(conn)


def serve_connects(address, family, authkey, n, ready):
    """Accept n connections; answer one message on each."""
    with Listener(address, family=family, authkey=authkey) as listener:
        ready.set()
        for _ in range(n):
            with listener.accept() as conn:
                conn.send_bytes(conn.recv_bytes())


def measure(op, warmup, rounds):
    for _ in range(warmup):
        op()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        op()
        times.append(time.perf_counter_ns() - t0)
    times.sort()
    tail = times[math.ceil(0.99 * len(times)) - 1]
    return statistics.median(times) / 1000, tail / 1000


def report(name, median_us, p99_us):
    print(f"{name}_median {median_us:.1f} us")
    print(f"{name}_p99 {p99_us:.1f} us", flush=True)


def round_trip(conn):
    def op():
        conn.send_bytes(PAYLOAD)
        conn.recv_bytes()
    return op


def bench_pipe():
    parent, child = mp.Pipe()
    p = mp.Process(target=echo, args=(child,))
    p.start()
    child.close()
    med, tail = measure(round_trip(parent), WARMUP, ROUNDS)
    parent.send_bytes(b"")
    p.join()
    report("py_pipe_rtt_64B", med, tail)


def bench_listener(family, name):
    address = ("127.0.0.1", 0) if family == "AF_INET" else None
    with Listener(address, family=family, authkey=AUTHKEY) as listener:
        p = mp.Process(target=echo_client,
                       args=(listener.address, family, AUTHKEY))
        p.start()
        with listener.accept() as conn:
            med, tail = measure(round_trip(conn), WARMUP, ROUNDS)
            conn.send_bytes(b"")
        p.join()
    report(name, med, tail)


def bench_connect(family, name, n):
    ready = mp.Event()  # set once the server listens
    if family == "AF_INET":
        # A free port chosen by the kernel, handed to the server process.
        with Listener(("127.0.0.1", 0), family=family) as probe:
            address = probe.address
    else:
        address = arbitrary_address(family)
    warmup = 3
    p = mp.Process(target=serve_connects,
                   args=(address, family, AUTHKEY, warmup + n, ready))
    p.start()
    ready.wait(10)

    def op():
        with Client(address, family=family, authkey=AUTHKEY) as conn:
            conn.send_bytes(PAYLOAD)
            conn.recv_bytes()

    med, tail = measure(op, warmup, n)
    p.join()
    print(f"{name}_median {med / 1000:.2f} ms")
    print(f"{name}_p99 {tail / 1000:.2f} ms", flush=True)


def main():
    print(f"# python {mp.get_start_method()} start method, "
          f"{len(PAYLOAD)} B messages", flush=True)
    bench_pipe()
    bench_listener("AF_UNIX", "py_connection_rtt_unix")
    bench_listener("AF_INET", "py_connection_rtt_tcp")
    # 20 over tcp: each one waits ~40 ms for a delayed ACK (see above).
    bench_connect("AF_INET", "py_connection_connect_rtt_tcp", 20)
    bench_connect("AF_UNIX", "py_connection_connect_rtt_unix", CONNECTS)


if __name__ == "__main__":
    main()
