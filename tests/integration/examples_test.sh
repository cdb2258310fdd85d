#!/usr/bin/env bash
# examples_test.sh - the shipped examples (libdmp/examples) print what the
# Python originals print, alone and over a cluster.
#
#   DMP_BUILD=build bash tests/integration/examples_test.sh
#
# queue, pipe, shared_memory and manager are the guide's programs 1 to 4,
# pool its program 5 (see the seed README; the pool is compared as that
# README says: any worker may take any item, and ten 1-second tasks on 4
# workers take about 3 s); each runs (a) alone, with the embedded agent,
# and (b) on a throwaway 3-node local cluster with DMP_PLACE=spread (and
# once more placed so the child is not on the node owning the queue or
# pipe). Their output is
# compared with the seed's expected files as the seed README says: lines
# of different processes may interleave, so the sorted multisets of lines
# must be equal, and the lines of each process (the "[name]" prefix, or
# none for the main process) must come in the expected order. `dmp ps -a`
# shows on which nodes the children really ran. hello must print one
# line per node. Afterwards no agent of this test is left running and no
# shared-memory segment of its agents is left in /dev/shm.
#
# One line per check, "ok - ..." or "not ok - ...", then "N passed, M
# failed"; the exit status is non-zero when a check failed. Everything
# lives in one temporary directory, removed on exit (DMP_TEST_KEEP=1
# keeps it). Waits poll a condition until a deadline; no sleep stands in
# for synchronisation. This machine's PID 1 does not reap, so agents that
# exited linger as zombies: only live processes count as running.
set -u

here="$(cd "$(dirname "$0")" && pwd)"
B="${DMP_BUILD:-build}"
B="$(cd "$B" && pwd)" || { echo "examples_test: no build dir '$B'"; exit 2; }
DMP="$B/bin/dmp"
export DMP_DMPD="$B/bin/dmpd"
unset DMP_CLUSTER DMP_KEY DMP_SERVER_KEY DMP_AGENT DMP_PLACE DMP_DEBUG

# The expected output: the seed beside the clone (CI keeps a read-only
# copy of shared/ next to it), else the copies committed here.
top="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null)"
SEED="$top/../shared/seed/expected"
[ -n "$top" ] && [ -r "$SEED/queue.txt" ] || SEED="$here/seed"
SEED="$(cd "$SEED" && pwd)"

# Ten 1-second tasks on 4 workers: 3 s of work, and up to 1.5 s to start
# the workers; sanitized builds (make test-asan) start processes several
# times slower.
POOL_MOST=4.5
[ -n "${DMP_TEST_SANITIZED:-}" ] && POOL_MOST=7.5
T="$(mktemp -d "${TMPDIR:-/tmp}/dmp-examples-XXXXXX")"
D="$T/cluster"
passed=0
failed=0

cleanup() {
    "$DMP" cluster down --kill --dir "$D" >/dev/null 2>&1
    if [ -n "${DMP_TEST_KEEP:-}" ]; then
        echo "# kept $T"
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok() {
    echo "ok - $*"
    passed=$((passed + 1))
}
not_ok() {
    echo "not ok - $*"
    failed=$((failed + 1))
}
# check DESC CMD...: passes when CMD succeeds.
check() {
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}
indent() { sed 's/^/#   /' "$@"; }
# quiet CMD...: runs CMD, showing its output only when it fails.
quiet() { "$@" >"$T/out" 2>&1 || { indent "$T/out"; return 1; }; }

now() { date +%s.%N; }
within() { awk -v a="$1" -v b="$(now)" -v l="$2" 'BEGIN { exit !(b - a < l) }'; }
# wait_until LIMIT CMD...: polls CMD until it succeeds or LIMIT seconds.
wait_until() {
    local limit=$1 start
    shift
    start=$(now)
    until "$@"; do
        within "$start" "$limit" || return 1
        sleep 0.02 # poll interval; the deadline bounds the wait
    done
}

# A process that exists and is not a zombie.
alive_pid() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
# Live processes whose command line mentions TEXT (our directory).
live_mentioning() {
    local f pid
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}
        pid=${pid%/cmdline}
        [ "$pid" = "$$" ] && continue
        if { tr '\0' ' ' <"$f"; } 2>/dev/null | grep -q -- "$1" &&
            alive_pid "$pid"; then
            echo "$pid"
        fi
    done
}
no_live_mentioning() { [ -z "$(live_mentioning "$1")" ]; }

# Shared memory. An agent names the segments of a queue or pipe
# /dmp-NODE-INCARNATION-ID-I and maps them until the object is released.
# Other programs on this machine (tests running beside this one, with
# node names of their own or the same node1..node3) make segments too, so
# a segment counts as ours only when it is new, carries one of our node
# names and, once our agents are gone, nobody maps it any more; while our
# agents run, what they still map is what they still hold.
shm_segments() { ls /dev/shm 2>/dev/null | grep '^dmp-' | sort; }
# Segments mapped by PIDS... (every live process when none is given).
mapped_by() {
    local maps=() p
    if [ $# -eq 0 ]; then
        maps=(/proc/[0-9]*/maps)
    else
        for p in "$@"; do maps+=("/proc/$p/maps"); done
    fi
    cat "${maps[@]}" 2>/dev/null |
        grep -o '/dev/shm/dmp-[^ ]*' | sed 's|^/dev/shm/||' | sort -u
}
# orphans SNAPSHOT NODES: segments new since the shm_segments SNAPSHOT,
# of a node in NODES (an ERE: node1|node2), that no live process maps.
orphans() {
    shm_segments | comm -13 "$1" - |
        grep -E "^dmp-($2)-[0-9a-f]{8}-[0-9]+-[0-9]+$" |
        comm -23 - <(mapped_by)
}
# held SNAPSHOT PIDS...: segments new since SNAPSHOT the agents PIDS map.
held() {
    local snap=$1
    shift
    mapped_by "$@" | comm -13 "$snap" -
}
# no_leak DESC CMD...: passes when CMD (orphans or held) prints nothing.
no_leak() {
    local desc=$1 left
    shift
    left=$("$@" | tr '\n' ' ')
    if [ -z "$left" ]; then
        ok "$desc: no shared memory left in /dev/shm"
    else
        not_ok "$desc: left in /dev/shm: $left"
    fi
}

# ---- comparing output with the seed -------------------------------------

# The process a line belongs to: "[name] ..." is name's, others main's.
s_key='{ key = "main"
         if (match($0, /^\[[^]]*\]/)) key = substr($0, 2, RLENGTH - 2) }'
keys_of() { awk "$s_key { print key }" "$@" | sort -u; }
lines_of() { awk -v k="$1" "$s_key key == k" "$2"; }

# same_output EXPECTED ACTUAL DESC: two checks, as the seed README asks.
same_output() {
    local exp=$1 act=$2 desc=$3 k bad=""
    if diff <(sort "$exp") <(sort "$act") >"$T/diff"; then
        ok "$desc: the same lines as the Python original"
    else
        not_ok "$desc: lines differ from $(basename "$exp") (sorted; < expected, > got)"
        indent "$T/diff"
    fi
    while read -r k; do
        if ! diff <(lines_of "$k" "$exp") <(lines_of "$k" "$act") \
            >"$T/diff"; then
            bad="$bad $k"
            indent "$T/diff"
        fi
    done < <(keys_of "$exp" "$act")
    if [ -z "$bad" ]; then
        ok "$desc: each process prints its lines in the expected order"
    else
        not_ok "$desc: order differs for:$bad"
    fi
}

# run_example NAME LABEL [VAR=VALUE...]: runs build/examples/NAME with the
# environment given (60 s at most), output in $T/LABEL.{out,err}; passes
# when it exits 0 and prints nothing on stderr.
run_example() {
    local name=$1 label=$2 rc
    shift 2
    local start
    start=$(now)
    env "$@" timeout -k 5 60 "$B/examples/$name" \
        >"$T/$label.out" 2>"$T/$label.err" </dev/null
    rc=$?
    awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }' \
        >"$T/$label.took"
    if [ "$rc" -eq 0 ]; then
        ok "$label: exits 0"
    else
        not_ok "$label: exit $rc"
        indent "$T/$label.out" "$T/$label.err" | head -40
    fi
    if [ -s "$T/$label.err" ]; then
        not_ok "$label: prints on stderr"
        indent "$T/$label.err" | head -20
    else
        ok "$label: nothing on stderr"
    fi
    return "$rc"
}

# pool_output EXPECTED ACTUAL DESC: the seed README's rule for the pool
# program, where any worker may take any item: the same workers greet,
# once each; every item's data line comes once, from a worker that greeted
# before it; the Result line is exactly the expected one.
pool_output() {
    local exp=$1 act=$2 desc=$3
    if diff <(grep '^Start process' "$exp" | sort) \
        <(grep '^Start process' "$act" | sort) >"$T/diff"; then
        ok "$desc: workers SpawnPoolWorker-1..4 greet once each"
    else
        not_ok "$desc: the greetings differ (sorted; < expected, > got)"
        indent "$T/diff"
    fi
    data() { sed -n 's/^\[SpawnPoolWorker-[0-9]*\] data : //p' "$1" | sort -n; }
    if diff <(data "$exp") <(data "$act") >"$T/diff"; then
        ok "$desc: each item's data line once"
    else
        not_ok "$desc: the data lines differ (< expected, > got)"
        indent "$T/diff"
    fi
    check "$desc: each data line from a worker that greeted before it" \
        awk '/^Start process : / { greeted[$4] = 1; next }
             /^\[/ { w = substr($1, 2, length($1) - 2)
                     if (!greeted[w]) bad = 1; next }
             /^Result : / { next }
             { bad = 1 }
             END { exit bad }' "$act"
    check "$desc: the Result line, exactly" \
        test "$(grep '^Result' "$act")" = "$(grep '^Result' "$exp")"
    check "$desc: as many lines as the original" \
        test "$(wc -l <"$act")" = "$(wc -l <"$exp")"
}
# took LABEL: seconds the last run_example of LABEL took.
took() { cat "$T/$1.took"; }

# hello_nodes FILE: the node of each "hello from ... on node N" line.
hello_nodes() { sed -n 's/^hello from .* on node \([^ ]*\) (pid .*/\1/p' "$1"; }

echo "# build $B, expected output from $SEED, dir $T"
for f in queue pipe shared_memory manager pool; do
    check "expected output $f.txt is readable" test -r "$SEED/$f.txt"
done
shm_segments >"$T/shm.start"

# ---- (a) alone: the embedded agent --------------------------------------
# TMPDIR puts each embedded agent's runtime directory in ours, so we can
# tell our agents from anyone else's.
mkdir -p "$T/emb"
# hello first: it says the embedded agent's node name (the host's).
run_example hello "hello alone" TMPDIR="$T/emb" &&
    check "hello alone: one hello, from the one node" \
        test "$(hello_nodes "$T/hello alone.out" | wc -l)" = 1
check "hello alone: its embedded agent is gone" \
    wait_until 5 no_live_mentioning "$T/emb"
emb_node=$(hello_nodes "$T/hello alone.out" | head -1)
[ -n "$emb_node" ] || emb_node=$(hostname)
for ex in queue pipe shared_memory manager; do
    shm_segments >"$T/shm.before"
    run_example "$ex" "$ex alone" TMPDIR="$T/emb" &&
        same_output "$SEED/$ex.txt" "$T/$ex alone.out" "$ex alone"
    if wait_until 5 no_live_mentioning "$T/emb"; then
        ok "$ex alone: its embedded agent is gone"
    else
        not_ok "$ex alone: embedded agent still running (pids:" \
            "$(live_mentioning "$T/emb" | tr '\n' ' '))"
    fi
    check "$ex alone: its agent's runtime directory is removed" \
        test -z "$(ls -A "$T/emb")"
    no_leak "$ex alone" orphans "$T/shm.before" "$emb_node"
done

# Pool: four workers, ten 1-second tasks: about 3 s, as in Python.
shm_segments >"$T/shm.before"
run_example pool "pool alone" TMPDIR="$T/emb" &&
    pool_output "$SEED/pool.txt" "$T/pool alone.out" "pool alone"
check "pool alone: ten 1-second tasks on 4 workers in about 3 s" \
    awk -v t="$(took "pool alone")" -v most="$POOL_MOST" \
        'BEGIN { exit !(t >= 3 && t < most) }'
echo "# pool alone took $(took "pool alone") s"
check "pool alone: its embedded agent is gone" \
    wait_until 5 no_live_mentioning "$T/emb"
no_leak "pool alone" orphans "$T/shm.before" "$emb_node"

# ---- (b) a 3-node cluster -----------------------------------------------
if ! "$DMP" cluster up -n 3 --dir "$D" --heartbeat 0.2 >"$T/up" 2>&1; then
    not_ok "cluster up -n 3"
    indent "$T/up"
    echo "$passed passed, $failed failed"
    exit 1
fi
ok "cluster up -n 3"
agent_pids=$(cat "$D"/node*.pid 2>/dev/null | awk '{ print $1 }')
# What '. D/env' sets: the program talks to node1 over tcp+CURVE.
. "$D/env"
cluster_env=(DMP_CLUSTER="$DMP_CLUSTER" DMP_KEY="$DMP_KEY"
             DMP_SERVER_KEY="$DMP_SERVER_KEY")
unset DMP_CLUSTER DMP_KEY DMP_SERVER_KEY
dmpc() { env "${cluster_env[@]}" "$DMP" "$@"; }
# NODE PID NAME STATE of every process the cluster lists, ended or not.
ps_rows() {
    dmpc ps -a 2>/dev/null |
        awk 'NR > 1 { s = $5; if (s == "exit") s = s $6; print $1, $2, $3, s }' |
        sort
}
# new_procs BEFORE: rows that appeared since the ps_rows snapshot BEFORE.
new_procs() { ps_rows | comm -13 "$1" -; }
node_of() { awk -v n="$1" '$3 == n { print $1 }' "$2"; }

# cluster_example NAME LABEL [VAR=VALUE...]: run_example on the cluster;
# the processes it started are in $T/LABEL.procs.
cluster_example() {
    local name=$1 label=$2 rc
    shift 2
    ps_rows >"$T/ps.before"
    shm_segments >"$T/shm.before"
    run_example "$name" "$label" "$@"
    rc=$?
    new_procs "$T/ps.before" >"$T/$label.procs"
    echo "# $label ran: $(awk '{ printf "%s on %s (%s); ", $3, $1, $4 }' \
        "$T/$label.procs")"
    check "$label: every child exited 0" \
        test -z "$(awk '$4 != "exit0"' "$T/$label.procs")"
    # shellcheck disable=SC2086 # one pid each
    no_leak "$label" held "$T/shm.before" $agent_pids
    return "$rc"
}

# Queue: spread puts set_data and get_data on different nodes; the queue
# is node1's, so get_data's blocking get goes through the owner.
cluster_example queue "queue spread" "${cluster_env[@]}" DMP_PLACE=spread &&
    same_output "$SEED/queue.txt" "$T/queue spread.out" "queue spread"
qs=$(node_of set_data "$T/queue spread.procs")
qg=$(node_of get_data "$T/queue spread.procs")
check "queue spread: set_data ran ($qs) on another node than get_data ($qg)" \
    test -n "$qs" -a -n "$qg" -a "$qs" != "$qg"
# The same from a program on node2 (as one started there): the queue is
# node2's and the children go to node2 and node3.
cluster_example queue "queue spread from node2" \
    DMP_AGENT="ipc://$D/run/node2/dmpd.sock" DMP_PLACE=spread &&
    same_output "$SEED/queue.txt" "$T/queue spread from node2.out" \
        "queue spread from node2"
qs=$(node_of set_data "$T/queue spread from node2.procs")
qg=$(node_of get_data "$T/queue spread from node2.procs")
check "queue spread from node2: set_data on $qs, get_data on $qg, different" \
    test -n "$qs" -a -n "$qg" -a "$qs" != "$qg"

# Pipe: one child, which spread puts on the program's own node; the
# parent talks to node1 over tcp, so its recv goes through the owner.
cluster_example pipe "pipe spread" "${cluster_env[@]}" DMP_PLACE=spread &&
    same_output "$SEED/pipe.txt" "$T/pipe spread.out" "pipe spread"
check "pipe spread: child ran ($(node_of child "$T/pipe spread.procs"))" \
    test -n "$(node_of child "$T/pipe spread.procs")"
# ...and with the child on another node than the pipe's owner (node1).
cluster_example pipe "pipe child on node2" "${cluster_env[@]}" \
    DMP_PLACE=node2 &&
    same_output "$SEED/pipe.txt" "$T/pipe child on node2.out" \
        "pipe child on node2"
check "pipe child on node2: child ran on node2" \
    test "$(node_of child "$T/pipe child on node2.procs")" = node2

# Shared memory: a Value and an Array owned by node1 (the program's
# node), the worker where spread puts it, then surely on another node
# (node2), where each get and set goes through node1.
cluster_example shared_memory "shared_memory spread" "${cluster_env[@]}" \
    DMP_PLACE=spread &&
    same_output "$SEED/shared_memory.txt" "$T/shared_memory spread.out" \
        "shared_memory spread"
cluster_example shared_memory "shared_memory worker on node2" \
    "${cluster_env[@]}" DMP_PLACE=node2 &&
    same_output "$SEED/shared_memory.txt" \
        "$T/shared_memory worker on node2.out" "shared_memory worker on node2"
check "shared_memory worker on node2: worker ran on node2" \
    test "$(node_of worker "$T/shared_memory worker on node2.procs")" = node2

# Manager: its server on node1 (the program's node), the worker where
# spread puts it, then surely on another node than the server (node2):
# every proxy call of the worker crosses hosts through the agents.
cluster_example manager "manager spread" "${cluster_env[@]}" DMP_PLACE=spread &&
    same_output "$SEED/manager.txt" "$T/manager spread.out" "manager spread"
cluster_example manager "manager worker on node2" "${cluster_env[@]}" \
    DMP_PLACE=node2 &&
    same_output "$SEED/manager.txt" "$T/manager worker on node2.out" \
        "manager worker on node2"
check "manager worker on node2: worker on node2, server on node1" \
    test "$(node_of worker "$T/manager worker on node2.procs")" = node2 -a \
    "$(awk '$3 ~ /^manager-/ { print $1 }' \
        "$T/manager worker on node2.procs")" = node1

# Pool: its four workers spread over the three nodes, the result the same
# and as fast.
cluster_example pool "pool spread" "${cluster_env[@]}" DMP_PLACE=spread &&
    pool_output "$SEED/pool.txt" "$T/pool spread.out" "pool spread"
echo "# pool spread took $(took "pool spread") s"
check "pool spread: in about 3 s" \
    awk -v t="$(took "pool spread")" -v most="$POOL_MOST" \
        'BEGIN { exit !(t >= 3 && t < most) }'
check "pool spread: workers on node1, node2 and node3 ($(awk \
    '$3 ~ /^SpawnPoolWorker-/ { print $1 }' "$T/pool spread.procs" |
    sort -u | tr '\n' ' '))" \
    test "$(awk '$3 ~ /^SpawnPoolWorker-/ { print $1 }' \
        "$T/pool spread.procs" | sort -u | tr '\n' ' ')" = \
    "node1 node2 node3 "

# hello: one process on every node, each says where it ran.
cluster_example hello "hello cluster" "${cluster_env[@]}"
check "hello cluster: three hellos" \
    test "$(hello_nodes "$T/hello cluster.out" | wc -l)" = 3
check "hello cluster: one from each of node1, node2, node3" \
    test "$(hello_nodes "$T/hello cluster.out" | sort | tr '\n' ' ')" = \
    "node1 node2 node3 "
check "hello cluster: dmp ps agrees (one process on each node)" \
    test "$(awk '{ print $1 }' "$T/hello cluster.procs" | sort -u |
        tr '\n' ' ')" = "node1 node2 node3 "

# ---- nothing left behind ------------------------------------------------
check "cluster down" quiet "$DMP" cluster down --dir "$D"
left=""
for p in $agent_pids; do
    wait_until 5 eval '! alive_pid "$p"' || left="$left $p"
done
check "no agent left running (pids: $(echo $agent_pids))" test -z "$left"
check "no live process mentions the test's directory" \
    wait_until 5 no_live_mentioning "$T"
check "no live process runs an example binary" \
    no_live_mentioning "$B/examples/"
no_leak "after cluster down" orphans "$T/shm.start" "node1|node2|node3|$emb_node"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
