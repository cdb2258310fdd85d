#!/usr/bin/env bash
# map_test.sh - `dmp map` end to end: a C function in a shared object and
# a command per item, on the embedded local node and over a 3-node local
# cluster, compared byte for byte with the expected output; failures,
# usage errors, --task-timeout and ^C (no command left behind), and a
# node killed (SIGKILL) in the middle of a map.
#
#   DMP_BUILD=build bash tests/integration/map_test.sh
#
# The module is build/examples/mathmod.so (libdmp/examples/modules/). The
# expected output is computed here with awk and seq, independently of dmp.
# 10k items in .so mode and in command mode (`echo {} {}`), as the issue
# asks; DMP_TEST_MAP_ITEMS changes that.
#
# One line per check, "ok - ..." or "not ok - ...", then "N passed, M
# failed"; the exit status is non-zero when a check failed. Everything
# lives in one temporary directory, removed on exit (DMP_TEST_KEEP=1 keeps
# it). Waits poll a condition until a deadline. Afterwards no worker of
# this test is left: no live process runs our `dmp` as a pool worker.
set -u

B="${DMP_BUILD:-build}"
B="$(cd "$B" && pwd)" || { echo "map_test: no build dir '$B'"; exit 2; }
DMP="$B/bin/dmp"
MOD="$B/examples/mathmod.so"
export DMP_DMPD="$B/bin/dmpd"
unset DMP_CLUSTER DMP_KEY DMP_SERVER_KEY DMP_AGENT DMP_PLACE DMP_DEBUG
# Under sanitizers (make test-asan) each command item starts two
# instrumented executables: a tenth of the items keeps the time bounded.
N="${DMP_TEST_MAP_ITEMS:-$([ -n "${ASAN_OPTIONS:-}" ] && echo 1000 || echo 10000)}"

T="$(mktemp -d "${TMPDIR:-/tmp}/dmp-map-XXXXXX")"
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
check() {
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}
indent() { sed 's/^/#   /' "$@"; }
now() { date +%s.%N; }
within() { awk -v a="$1" -v b="$(now)" -v l="$2" 'BEGIN { exit !(b - a < l) }'; }
wait_until() {
    local limit=$1 start
    shift
    start=$(now)
    until "$@"; do
        within "$start" "$limit" || return 1
        sleep 0.05 # poll interval; the deadline bounds the wait
    done
}

# same LABEL EXPECTED: $T/out equals EXPECTED byte for byte.
same() {
    if cmp -s "$2" "$T/out"; then
        ok "$1: exactly the expected output ($(wc -l <"$2") lines)"
    else
        not_ok "$1: output differs (< expected, > got)"
        diff "$2" "$T/out" | head -10 | indent
    fi
}
# run WANT LABEL CMD...: CMD with stdout in $T/out, stderr in $T/err
# (stdin from $T/in when it exists), passing when it exits with WANT.
run() {
    local want=$1 label=$2 rc
    shift 2
    if [ -e "$T/in" ]; then
        timeout -k 5 120 "$@" <"$T/in" >"$T/out" 2>"$T/err"
    else
        timeout -k 5 120 "$@" </dev/null >"$T/out" 2>"$T/err"
    fi
    rc=$?
    if [ "$rc" -eq "$want" ]; then
        ok "$label: exit $rc"
    else
        not_ok "$label: exit $rc, expected $want"
        indent "$T/err" | head -10
    fi
}
err_has() { grep -q -- "$1" "$T/err"; }

# Live pool workers running our dmp (their environment names them).
workers() {
    local f pid
    for f in /proc/[0-9]*/environ; do
        pid=${f#/proc/}
        pid=${pid%/environ}
        [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$DMP" ] || continue
        { tr '\0' '\n' <"$f"; } 2>/dev/null |
            grep -q '^DMP_PROCESS_NAME=SpawnPoolWorker' && echo "$pid"
    done
}
no_workers() { [ -z "$(workers)" ]; }

echo "# build $B, $N items, dir $T"
check "the example module is built" test -r "$MOD"
seq 1 "$N" >"$T/items"
awk '{ printf "%.0f\n", $1 * $1 }' "$T/items" >"$T/squares"
awk '{ print $1, $1 }' "$T/items" >"$T/echoes"

# ---- on the embedded local node ------------------------------------------
cp "$T/items" "$T/in"
run 0 ".so mode, $N items from stdin" "$DMP" map -q "$MOD:square"
same ".so mode" "$T/squares"
run 0 "command mode, $N items from stdin" "$DMP" map -q -- echo {} {}
same "command mode" "$T/echoes"
rm -f "$T/in"
run 0 "items as arguments" "$DMP" map "$MOD:square" 3 4 12
printf '9\n16\n144\n' >"$T/want"
same "items as arguments" "$T/want"
check "the summary counts them" err_has "3 items"
run 0 "command mode, items after :::" "$DMP" map -q -- echo x{}y ::: a b
printf 'xay\nxby\n' >"$T/want"
same "command mode, {} inside a word" "$T/want"
run 0 "command mode without {}: the item is the last argument" \
    "$DMP" map -q -- echo item ::: 1 2
printf 'item 1\nitem 2\n' >"$T/want"
same "command mode without {}" "$T/want"
run 0 "arguments are passed literally, no shell" \
    "$DMP" map -q -- echo '$HOME;' ::: '`id`' '*'
printf '$HOME; `id`\n$HOME; *\n' >"$T/want"
same "no shell" "$T/want"
run 0 "--processes 1 --chunksize 7" "$DMP" map -q -p 1 -c 7 "$MOD:square" \
    $(seq 1 20)
seq 1 20 | awk '{ printf "%.0f\n", $1 * $1 }' >"$T/want"
same "one worker, chunks of 7" "$T/want"

# failures: the item keeps its (empty) line, the list names it, exit 1
run 1 "a failing item" "$DMP" map "$MOD:square" 5 oops 6
printf '25\n\n36\n' >"$T/want"
same "a failing item keeps its line" "$T/want"
check "the failure is listed with the item and why" \
    err_has "failed: item 2 'oops': not an integer: 'oops'"
check "the summary says 1 failed" err_has "2 ok, 1 failed"
run 1 "failing commands" "$DMP" map -- sh -c 'exit $1' sh ::: 0 3 0
check "a command's exit status is listed" \
    err_has "failed: item 2 '3': 'sh' exited with status 3"
run 1 "a command that cannot run" "$DMP" map -- /nonexistent/cmd ::: 1
check "its error is listed" err_has "No such file or directory"

# a command over --task-timeout: killed with its worker, counted as a
# crash, reported; no command left behind (it dies with its worker)
live_cmd() { # CMDLINE: pids of live processes running exactly that
    local f pid
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}
        pid=${pid%/cmdline}
        [ "$({ tr '\0' ' ' <"$f"; } 2>/dev/null)" = "$1 " ] || continue
        [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" = Z ] ||
            echo "$pid"
    done
}
no_cmd() { [ -z "$(live_cmd "$1")" ]; }
start=$(now)
run 1 "--task-timeout 0.3: a command that runs too long" \
    "$DMP" map -t 0.3 -r 1 -- sleep ::: 0.1 31.4159 0.2
check "it is reported as over the task timeout" \
    err_has "failed: item 2 '31.4159': ran over the task timeout 2 times"
check "within seconds" within "$start" 10
check "no command outlives its killed worker" \
    wait_until 5 no_cmd "sleep 31.4159"
# ^C: the workers are terminated, and their commands with them
"$DMP" map -q -- sleep ::: 27.1828 27.1828 >/dev/null 2>&1 &
mapper=$!
two_sleeping() { [ "$(live_cmd "sleep 27.1828" | wc -l)" -eq 2 ]; }
check "two commands running" wait_until 10 two_sleeping
kill -INT "$mapper"
wait "$mapper"
rc=$?
check "^C: dmp map exits 130 (exit $rc)" test "$rc" -eq 130
check "^C: no command left running" wait_until 5 no_cmd "sleep 27.1828"

# usage errors (exit 2), nothing started
run 2 "not MODULE:FUNC" "$DMP" map "$MOD" 1
run 2 "no such module" "$DMP" map "$T/nothing.so:f" 1
run 2 "no such function" "$DMP" map "$MOD:no_such_function" 1
check "the missing function is named" err_has "no_such_function"
run 2 "--chunksize 0" "$DMP" map -c 0 "$MOD:square" 1
run 0 "--help" "$DMP" map --help
check "--help names both modes" grep -q -- "-- CMD" "$T/out"

check "no worker left on the local node" wait_until 5 no_workers

# ---- a 3-node local cluster ----------------------------------------------------
if ! "$DMP" cluster up -n 3 --dir "$D" --heartbeat 0.2 >"$T/up" 2>&1; then
    not_ok "cluster up -n 3"
    indent "$T/up"
    echo "$passed passed, $failed failed"
    exit 1
fi
ok "cluster up -n 3"
. "$D/env"
export DMP_CLUSTER DMP_KEY DMP_SERVER_KEY
cp "$T/items" "$T/in"
run 0 ".so mode over the cluster" "$DMP" map -q "$MOD:square"
same ".so mode over the cluster" "$T/squares"
run 0 "command mode over the cluster" "$DMP" map -q -- echo {} {}
same "command mode over the cluster" "$T/echoes"
# The same from a program that cannot map the node's rings (its own
# /dev/shm, as on another host): every queue operation of the pool's
# owner then goes over tcp through node1. Needs root for unshare -m.
if [ "$(id -u)" -eq 0 ] && unshare -m true 2>/dev/null; then
    run 0 ".so mode from a program without the node's shared memory" \
        unshare -m sh -c 'mount -t tmpfs tmpfs /dev/shm && exec "$@"' sh \
        "$DMP" map -q "$MOD:square"
    same ".so mode, the owner's queues remote" "$T/squares"
else
    echo "# skipped: the owner without shared memory (needs root, unshare -m)"
fi
# where the workers ran: every node
run 0 "the workers' nodes" "$DMP" map -q -c 50 -- sh -c 'echo $DMP_NODE' \
    ::: $(seq 1 600)
check "workers ran on node1, node2 and node3 ($(sort -u "$T/out" |
    tr '\n' ' '))" test "$(sort -u "$T/out" | tr '\n' ' ')" = \
    "node1 node2 node3 "
run 0 "--nodes node2,node3" "$DMP" map -q --nodes node2,node3 \
    -- sh -c 'echo $DMP_NODE' ::: $(seq 1 200)
check "--nodes: only node2 and node3" \
    test "$(sort -u "$T/out" | tr '\n' ' ')" = "node2 node3 "
rm -f "$T/in"
run 4 "--nodes naming a node that is not there" \
    "$DMP" map -q --nodes node9 "$MOD:square" 1

# node3's agent killed with SIGKILL in the middle of a map: every result,
# once, in order (its workers' chunks run again on node1 and node2)
big=$((N * 10))
seq 1 "$big" >"$T/in"
awk '{ printf "%.0f\n", $1 * $1 }' "$T/in" >"$T/big"
(sleep 0.05; exec "$DMP" map -q -c 20 "$MOD:square" <"$T/in" >"$T/out" \
    2>"$T/err") &
mapper=$!
# once node3 has done some of the work (the output is past a quarter)
quarter() { [ "$(wc -l <"$T/out" 2>/dev/null || echo 0)" -ge $((big / 4)) ]; }
if wait_until 60 quarter; then
    ok "map over the cluster under way ($(wc -l <"$T/out") of $big lines)"
else
    not_ok "map over the cluster did not get a quarter through"
fi
"$DMP" cluster stop --kill --dir "$D" node3 >/dev/null 2>&1
killed_at=$(wc -l <"$T/out")
wait "$mapper"
rc=$?
check "node3 killed at line $killed_at of $big: dmp map exits 0 (exit $rc)" \
    test "$rc" -eq 0
same "node3 killed mid-map" "$T/big"
rm -f "$T/in"

check "cluster down" "$DMP" cluster down --dir "$D"
check "no worker left on any node" wait_until 10 no_workers

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
