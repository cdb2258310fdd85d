#!/usr/bin/env bash
# tests/bench/netns_bench.sh - the cross-host benchmarks between two real
# hosts: network namespaces joined by a veth pair, a dmpd in each, CURVE
# between them (DESIGN.md §8 measures "two hosts" this way).
#
#   DMP_BUILD=build tests/bench/netns_bench.sh BENCH...
#
# Runs each benchmark binary DMP_BENCH_RUNS times (default 3) in host H1
# (10.78.0.1) against node1, with node2 in H2 (10.78.0.2), and
# DMP_BENCH_HOST=10.78.0.1 so that the raw ZeroMQ references cross the
# same veth as dmp's traffic. Prints each cross-host number of each run as
# `netns_NAME value unit` (tests/bench/run.sh takes the medians and puts
# them in its table).
# DMP_BENCH_DMPD_ARGS: more options for both agents (say --busy-poll 0,
# to compare). Needs root and `ip netns`; otherwise prints a note and
# exits 0. The namespaces, agents and the temporary directory go on any
# exit.
set -u

B="${DMP_BUILD:-build}"
B="$(cd "$B" && pwd)" || exit 1
runs=${DMP_BENCH_RUNS:-3}
per_bench_timeout=${DMP_BENCH_TIMEOUT:-120}
# The numbers that cross hosts; the rest are measured on one host already.
keep='^(pipe_rtt_remote_64B_median|pipe_stream_remote_64B_rate|zmq_curve_reqrep_rtt_64B_median|queue_remote_put_64B_rate|zmq_curve_pushpull_64B_rate) '

if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null 2>&1; then
    echo "# netns benchmarks skipped: they need root and ip(8)"
    exit 0
fi
NS="dmpb$$"
if ! ip netns add "$NS-H1" 2>/dev/null; then
    echo "# netns benchmarks skipped: ip netns add is not permitted here"
    exit 0
fi
T="$(mktemp -d "${TMPDIR:-/tmp}/dmp-netns-bench.XXXXXX")"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    ip netns del "$NS-H1" 2>/dev/null
    ip netns del "$NS-H2" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "# netns benchmarks: $*" >&2
    exit 1
}
ip netns add "$NS-H2" &&
    ip -n "$NS-H1" link add eth0 type veth peer name eth0 netns "$NS-H2" &&
    ip -n "$NS-H1" addr add 10.78.0.1/24 dev eth0 &&
    ip -n "$NS-H2" addr add 10.78.0.2/24 dev eth0 &&
    ip -n "$NS-H1" link set eth0 up && ip -n "$NS-H1" link set lo up &&
    ip -n "$NS-H2" link set eth0 up && ip -n "$NS-H2" link set lo up ||
    fail "cannot set up the namespaces"

K="$T/keys"
S="$T/secret"
mkdir -p "$K/nodes" && chmod 755 "$K" "$K/nodes" || fail "mkdir"
for n in node1 node2; do
    "$B/bin/dmp" keygen -o "$S" "$n" >/dev/null || fail "dmp keygen"
    cp "$S/$n.pub" "$K/nodes/"
done
for i in 1 2; do
    other=$((3 - i))
    cat >"$T/node$i.conf" <<EOF
name        = node$i
listen      = tcp://10.78.0.$i:7700
key         = $S/node$i.key
keys_dir    = $K
runtime_dir = $T/run/node$i
peer        = node$other@tcp://10.78.0.$other:7700
EOF
    # shellcheck disable=SC2086 # options, split on purpose
    ip netns exec "$NS-H$i" "$B/bin/dmpd" -c "$T/node$i.conf" \
        ${DMP_BENCH_DMPD_ARGS:-} >"$T/node$i.log" 2>&1 &
    pids+=($!)
done

export DMP_AGENT="ipc://$T/run/node1/dmpd.sock"
export DMP_DMPD="$B/bin/dmpd"
export DMP_BENCH_HOST=10.78.0.1
unset DMP_CLUSTER DMP_KEY DMP_SERVER_KEY DMP_PLACE
alive=0
for _ in $(seq 100); do
    if ip netns exec "$NS-H1" "$B/bin/dmp" nodes 2>/dev/null |
        grep -q 'node2.*alive'; then
        alive=1
        break
    fi
    sleep 0.1
done
[ "$alive" = 1 ] || fail "node2 not seen alive from node1"
echo "# two hosts: H1 10.78.0.1 (node1, the benchmarks), H2 10.78.0.2" \
    "(node2), one veth pair"

: >"$T/results"
status=0
for i in $(seq "$runs"); do
    for bench in "$@"; do
        if ! timeout "$per_bench_timeout" ip netns exec "$NS-H1" "$bench" \
            >"$T/out" 2>"$T/err"; then
            echo "# $(basename "$bench") (netns run $i): failed" >&2
            sed 's/^/#   /' "$T/err" >&2
            status=1
        fi
        grep -E "$keep" "$T/out" >>"$T/results"
    done
done
# Every number, prefixed netns_ (run.sh takes the medians with its own).
sed 's/^/netns_/' "$T/results"
exit $status
