#!/usr/bin/env bash
# cli_test.sh - the dmp command end to end: keygen, a local cluster of real
# agents (up, stop --kill, start, down), dmp nodes against it with good and
# bad keys, the embedded default, help and usage errors, exit statuses.
#
#   DMP_BUILD=build bash tests/integration/cli_test.sh
#
# One line per check, "ok - ..." or "not ok - ...", then "N passed, M
# failed"; the exit status is non-zero when a check failed. Everything
# lives in one temporary directory, removed on exit (DMP_TEST_KEEP=1
# keeps it), and every agent started here is stopped on exit. Waits poll
# a condition until a deadline; no sleep stands in for synchronisation.
#
# This machine's PID 1 does not reap, so the agents `dmp cluster` detaches
# linger as zombies once stopped: only live processes count as running.
set -u

B="${DMP_BUILD:-build}"
B="$(cd "$B" && pwd)" || { echo "cli_test: no build dir '$B'"; exit 2; }
DMP="$B/bin/dmp"
DMPD="$B/bin/dmpd"
export DMP_DMPD="$DMPD"
unset DMP_CLUSTER DMP_KEY DMP_SERVER_KEY DMP_AGENT DMP_DEBUG

T="$(mktemp -d "${TMPDIR:-/tmp}/dmp-cli-XXXXXX")"
D="$T/cluster"
K="$T/keys"
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
# expect WANT DESC CMD...: runs CMD (stdout in $T/out, stderr in $T/err)
# and passes when it exits with WANT.
expect() {
    local want=$1 desc=$2 rc
    shift 2
    "$@" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    if [ "$rc" -eq "$want" ]; then
        ok "$desc (exit $rc)"
    else
        not_ok "$desc: exit $rc, expected $want"
        sed 's/^/#   /' "$T/err" | head -20
    fi
}
# The last command's stderr/stdout mention TEXT.
err_has() { grep -q -- "$1" "$T/err"; }
out_has() { grep -q -- "$1" "$T/out"; }

now() { date +%s.%N; }
# since START [LIMIT]: prints seconds since START; with LIMIT, succeeds
# while that is under LIMIT.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
within() { awk -v a="$1" -v b="$(now)" -v l="$2" 'BEGIN { exit !(b - a < l) }'; }

mode() { stat -c %a "$1"; }
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

# dmp against the local cluster, as a user would after '. D/env'.
dmpc() ( . "$D/env" && "$DMP" "$@" )
# STATE of node NAME in `dmp nodes` output on stdin.
state_of() { awk -v n="$1" 'NR > 1 && $1 == n { print $3 }'; }
count_alive() { awk 'NR > 1 && $3 == "alive"' | wc -l; }
# wait_state NODE STATE LIMIT: polls dmp nodes until NODE shows STATE.
wait_state() {
    local start st
    start=$(now)
    while :; do
        st=$(dmpc nodes --timeout 2 2>/dev/null | state_of "$1")
        [ "$st" = "$2" ] && return 0
        within "$start" "$3" || return 1
        sleep 0.02 # poll interval; the deadline bounds the wait
    done
}

echo "# $("$DMP" --version 2>&1), build $B, dir $T"

# ---- keygen -------------------------------------------------------------
expect 0 "keygen writes a keypair" "$DMP" keygen -o "$K" n
check "keygen: secret key is mode 0600" test "$(mode "$K/n.key")" = 600
check "keygen: public key is mode 0644" test "$(mode "$K/n.pub")" = 644
check "keygen: output dir is created 0700" test "$(mode "$K")" = 700
check "keygen: public key is one line of 40 characters" \
    test "$(grep -v '^#' "$K/n.pub" | tr -d '\n' | wc -c)" = 40
check "keygen: secret key differs from public key" \
    test "$(grep -v '^#' "$K/n.key")" != "$(grep -v '^#' "$K/n.pub")"
sum_before=$(cat "$K/n.key" "$K/n.pub" | md5sum)
expect 1 "keygen refuses to overwrite" "$DMP" keygen -o "$K" n
check "keygen: refusal says so" err_has "already exists"
check "keygen: refused keys are untouched" \
    test "$(cat "$K/n.key" "$K/n.pub" | md5sum)" = "$sum_before"
rm -f "$K/n.key"
expect 1 "keygen refuses when only the .pub exists" "$DMP" keygen -o "$K" n
expect 2 "keygen rejects an invalid name" "$DMP" keygen -o "$K" "bad/name"
expect 2 "keygen rejects a name starting with '.'" "$DMP" keygen -o "$K" .x
expect 2 "keygen without a name" "$DMP" keygen -o "$K"
expect 2 "keygen with two names" "$DMP" keygen -o "$K" a b
expect 2 "keygen with an unknown option" "$DMP" keygen --bogus x
expect 1 "keygen into an unwritable place" "$DMP" keygen -o /proc/dmp-x n

# ---- help and usage errors ------------------------------------------------
for cmd in "" keygen nodes cluster "cluster up"; do
    # shellcheck disable=SC2086 # split "cluster up" on purpose
    expect 0 "dmp${cmd:+ $cmd} --help" "$DMP" $cmd --help
    check "dmp${cmd:+ $cmd} --help prints usage on stdout" out_has "usage:"
done
expect 0 "dmp help" "$DMP" help
expect 0 "dmp --version" "$DMP" --version
expect 0 "dmpd --help" "$DMPD" --help
check "dmpd --help prints usage on stdout" out_has "usage:"
expect 0 "dmpd --version" "$DMPD" --version
expect 2 "dmp without a command" "$DMP"
expect 2 "dmp with an unknown command" "$DMP" frobnicate
expect 2 "dmp nodes with an unknown option" "$DMP" nodes --bogus
expect 2 "dmp nodes with a stray argument" "$DMP" nodes extra
expect 2 "dmp nodes --timeout abc" "$DMP" nodes --timeout abc
expect 2 "dmp nodes --timeout -1" "$DMP" nodes --timeout -1
expect 2 "dmp nodes --wait x" "$DMP" nodes --wait x
expect 2 "dmp nodes --cluster not-an-address" \
    "$DMP" nodes --cluster not-an-address --key "$K/x" --server-key "$K/x"
expect 2 "dmp cluster without a verb" "$DMP" cluster
expect 2 "dmp cluster up without --dir" "$DMP" cluster up -n 3
expect 2 "dmp cluster with an unknown verb" "$DMP" cluster frob --dir "$D"
expect 2 "dmp cluster up -n 0" "$DMP" cluster up -n 0 --dir "$D"
expect 2 "dmp cluster up -n 65" "$DMP" cluster up -n 65 --dir "$D"
expect 2 "dmp cluster up --heartbeat nan" \
    "$DMP" cluster up --heartbeat nan --dir "$D"
expect 2 "dmp cluster up --liveness 1" \
    "$DMP" cluster up --liveness 1 --dir "$D"
expect 2 "dmp cluster start without a node" "$DMP" cluster start --dir "$D"
expect 2 "dmp cluster stop with two nodes" \
    "$DMP" cluster stop --dir "$D" node1 node2
expect 2 "dmpd with an unknown option" "$DMPD" --bogus
expect 2 "dmpd --heartbeat 0" "$DMPD" --heartbeat 0
expect 2 "dmpd --busy-poll beyond 0.1 s" "$DMPD" --busy-poll 100001
check "dmpd --busy-poll refusal names the range" err_has "0 (never) to 100000"
expect 2 "dmpd --busy-poll -1" "$DMPD" --busy-poll -1
expect 0 "dmpd --busy-poll 0 is a valid setting" "$DMPD" --busy-poll 0 --version
expect 2 "dmpd with a stray argument" "$DMPD" extra
check "usage errors started no cluster" test ! -e "$D/node1.conf"

# ---- the embedded default ---------------------------------------------------
mkdir -p "$T/emb"
expect 0 "dmp nodes with no cluster configured (embedded)" \
    env TMPDIR="$T/emb" "$DMP" nodes
check "embedded: lists exactly one node" \
    test "$(count_alive <"$T/out")" = 1 -a "$(wc -l <"$T/out")" = 2
check "embedded: its agent is gone afterwards" no_live_mentioning "$T/emb"
check "embedded: its runtime dir is removed" \
    test -z "$(ls -A "$T/emb")"
expect 4 "embedded with a dmpd that does not exist" \
    env TMPDIR="$T/emb" DMP_DMPD="$T/no-dmpd" "$DMP" nodes

# ---- a local cluster ----------------------------------------------------------
start=$(now)
expect 0 "cluster up -n 3 --heartbeat 0.2" \
    "$DMP" cluster up -n 3 --dir "$D" --heartbeat 0.2
echo "# cluster up took $(since "$start") s"
check "cluster: env file written" test -r "$D/env"
check "cluster: secret dir is 0700" test "$(mode "$D/secret")" = 700
check "cluster: node secret keys are 0600" \
    test "$(stat -c %a "$D"/secret/*.key | sort -u)" = 600
check "cluster: every node has a config and a pid file" \
    test -f "$D/node3.conf" -a -f "$D/node1.pid" -a -f "$D/node3.pid"
expect 0 "dmp nodes against the cluster" dmpc nodes
check "dmp nodes shows 3 alive" test "$(count_alive <"$T/out")" = 3
check "dmp nodes lists node1 first" \
    test "$(awk 'NR == 2 { print $1 }' "$T/out")" = node1
expect 0 "dmp nodes --wait 3" dmpc nodes --wait 3 --timeout 5
expect 1 "cluster up while it runs is refused" \
    "$DMP" cluster up -n 3 --dir "$D"
check "cluster: the refusal names the running node" err_has "is running"

# kill -9 one node: the others see it dead within heartbeat x liveness
expect 0 "cluster stop --kill node2" "$DMP" cluster stop --kill --dir "$D" node2
killed=$(now)
if wait_state node2 dead 1.5; then
    ok "node2 shown dead $(since "$killed") s after kill -9 (limit 1.5 s)"
else
    not_ok "node2 not shown dead within 1.5 s of kill -9"
    dmpc nodes 2>&1 | sed 's/^/#   /'
fi
expect 0 "dmp nodes with node2 dead" dmpc nodes
check "the two others stay alive" test "$(count_alive <"$T/out")" = 2
expect 1 "cluster stop of a stopped node" "$DMP" cluster stop --dir "$D" node2
expect 0 "cluster start node2" "$DMP" cluster start --dir "$D" node2
restarted=$(now)
if wait_state node2 alive 5; then
    ok "node2 alive again $(since "$restarted") s after start"
else
    not_ok "node2 not alive within 5 s of start"
fi
expect 0 "dmp nodes after the restart" dmpc nodes --wait 3 --timeout 5
check "3 alive after the restart" test "$(count_alive <"$T/out")" = 3
expect 1 "cluster start of a running node" "$DMP" cluster start --dir "$D" node2
expect 1 "cluster start of an unknown node" "$DMP" cluster start --dir "$D" node9

# refused keys and unreachable nodes
expect 0 "keygen a key the cluster does not know" "$DMP" keygen -o "$K" stranger
start=$(now)
expect 3 "dmp nodes with an unknown client key" \
    bash -c '. "$1/env"; DMP_KEY="$2" "$3" nodes' _ "$D" "$K/stranger.key" \
    "$DMP"
check "unknown key: refused within 3 s" within "$start" 3
check "unknown key: says the key was refused" err_has "refused our key"
start=$(now)
expect 3 "dmp nodes pinning the wrong server key" \
    bash -c '. "$1/env"; DMP_SERVER_KEY="$1/keys/nodes/node2.pub" "$2" nodes' \
    _ "$D" "$DMP"
check "wrong server key: fails within 3 s" within "$start" 3
check "wrong server key: says identity mismatch" \
    err_has "server identity mismatch"
cp "$D/secret/client.key" "$K/open.key"
chmod 644 "$K/open.key"
expect 3 "dmp nodes with a world-readable client key" \
    bash -c '. "$1/env"; DMP_KEY="$2" "$3" nodes' _ "$D" "$K/open.key" "$DMP"
check "readable key: says how to fix it" err_has "chmod 600"
expect 3 "dmp nodes over tcp without a client key" \
    bash -c '. "$1/env"; unset DMP_KEY; "$2" nodes' _ "$D" "$DMP"
start=$(now)
expect 4 "dmp nodes with an unreachable address" \
    bash -c '. "$1/env"; "$2" nodes --cluster tcp://127.0.0.1:1 --timeout 1' \
    _ "$D" "$DMP"
check "unreachable: gives up within its timeout (+1 s)" within "$start" 2
check "unreachable: says it cannot reach the node" err_has "cannot reach"

# down leaves nothing running
pids=$(cat "$D"/node*.pid 2>/dev/null | awk '{ print $1 }')
expect 0 "cluster down" "$DMP" cluster down --dir "$D"
check "cluster down: says 3 nodes stopped" out_has "stopped 3 nodes"
left=""
for p in $pids; do alive_pid "$p" && left="$left $p"; done
check "cluster down: no agent left running (pids: $(echo $pids))" \
    test -z "$left"
check "cluster down: no live process mentions the cluster dir" \
    no_live_mentioning "$D"
check "cluster down: pid files removed" test -z "$(ls "$D"/*.pid 2>/dev/null)"
check "cluster down: sockets and locks removed" \
    test -z "$(ls "$D"/run/*/dmpd.* 2>/dev/null)"
expect 4 "dmp nodes after down: unreachable" dmpc nodes --timeout 1
expect 0 "cluster down again is harmless" "$DMP" cluster down --dir "$D"

# up again reuses the keys on disk
pub_before=$(md5sum <"$D/keys/nodes/node1.pub")
expect 0 "cluster up again after down" \
    "$DMP" cluster up -n 3 --dir "$D" --heartbeat 0.2
check "cluster up again keeps the node keys" \
    test "$(md5sum <"$D/keys/nodes/node1.pub")" = "$pub_before"
expect 0 "dmp nodes on the new cluster" dmpc nodes
check "the new cluster shows 3 alive" test "$(count_alive <"$T/out")" = 3
expect 0 "cluster down --kill" "$DMP" cluster down --kill --dir "$D"
check "cluster down --kill: nothing left running" no_live_mentioning "$D"

# ---- processes: dmp run, dmp ps, the hello example ----------------------------
# The agents start with a stray descriptor (9) and variables no child may
# see, as a careless parent would leave them; children must get neither.
unset DMP_PLACE
HELLO="$B/examples/hello"
gone_pid() { [ -n "$1" ] && ! alive_pid "$1"; }
expect 0 "cluster up for the process checks" \
    env DMP_TEST_SECRET=leak LD_LIBRARY_PATH=/nonexistent-lib \
    bash -c 'exec 9>"$1/fd9"; exec "$2" cluster up -n 3 --dir "$3" --heartbeat 0.2' \
    _ "$T" "$DMP" "$D"
expect 7 "dmp run --node node2: sh prints on both streams and exits 7" \
    dmpc run --node node2 -- /bin/sh -c 'echo out; echo err >&2; exit 7'
check "dmp run: stdout is exactly 'out'" test "$(cat "$T/out")" = out
check "dmp run: stderr is exactly 'err'" test "$(cat "$T/err")" = err
expect 137 "dmp run: a program killed by SIGKILL exits 128+9" \
    dmpc run -- sh -c 'kill -9 $$'
expect 4 "dmp run -n nosuchnode" dmpc run -n nosuchnode -- true
check "unknown node: the message names it" err_has "'nosuchnode'"
check "unknown node: says it is not in the cluster" err_has "not in the cluster"
expect 2 "dmp run of a file that does not exist" dmpc run -- /nonexistent
check "missing file: says so" err_has "no such executable file"
expect 2 "dmp run without a program" dmpc run
expect 2 "dmp run -n with an invalid node name" dmpc run -n ../x -- true
expect 0 "dmp run passes arguments literally, no shell" \
    dmpc run -n node3 -- /bin/echo 'a;b' '$HOME' '*' '`id`'
check "literal arguments: printed unchanged" \
    test "$(cat "$T/out")" = 'a;b $HOME * `id`'
expect 0 "dmp run env" dmpc run -- env
check "child environment: names its node" grep -qx "DMP_NODE=node1" "$T/out"
check "child environment: nothing outside the allow-list" \
    test -z "$(grep -E '^(DMP_TEST_SECRET|LD_LIBRARY_PATH)=' "$T/out")"
expect 0 "dmp run: the program's open descriptors" \
    dmpc run -- sh -c 'ls /proc/$$/fd; true'
# 3 is the spawn record dmp gives its children; nothing else may be open.
extra_fds=$(grep -vxE '[0-3]' "$T/out" | tr '\n' ' ')
check "child descriptors: only 0-2 and dmp's own (extra: ${extra_fds:-none})" \
    test -z "$extra_fds"
# A dmp program run as a plain command (it reads DMP_AGENT, not a target).
expect 0 "dmp run of a dmp program: dmp nodes on node2" \
    dmpc run -n node2 -- "$DMP" nodes
check "dmp nodes run by dmp run: lists 3 alive" \
    test "$(count_alive <"$T/out")" = 3
expect 0 "dmp ps -a" dmpc ps -a
check "dmp ps -a: header" out_has "^NODE  *PID  *NAME  *TARGET  *STATE  *RUNTIME"
check "dmp ps -a: the sh on node2 that exited 7" \
    grep -Eq '^node2 +[0-9]+ +sh +- +exit 7 ' "$T/out"
check "dmp ps -a: the sh on node1 killed by signal 9" \
    grep -Eq '^node1 +[0-9]+ +sh +- +exit -9 ' "$T/out"
check "dmp ps -a: the echo on node3" \
    grep -Eq '^node3 +[0-9]+ +echo +- +exit 0 ' "$T/out"
expect 0 "dmp ps" dmpc ps
check "dmp ps without -a: no ended process listed" test "$(wc -l <"$T/out")" = 1

# ^C on dmp run terminates the remote program.
( . "$D/env" && exec "$DMP" run -n node2 -- sleep 30 ) >/dev/null 2>&1 &
runpid=$!
start=$(now)
until dmpc ps 2>/dev/null | grep -Eq '^node2 +[0-9]+ +sleep +- +running'; do
    within "$start" 5 || break
    sleep 0.02 # poll interval; the deadline bounds the wait
done
kill -INT "$runpid"
wait "$runpid"
rc=$?
check "dmp run interrupted: exits 128+15 (got $rc)" test "$rc" -eq 143
expect 0 "dmp ps -a after the interrupt" dmpc ps -a
check "the interrupted sleep ended by SIGTERM" \
    grep -Eq '^node2 +[0-9]+ +sleep +- +exit -15 ' "$T/out"

# Output to a reader that falls behind (a pager, a slow pipe) is relayed
# whole: the program is slowed down, nothing dropped, its exit not lost.
lines='i=0; while [ $i -lt 200000 ]; do echo "line $i abcdefghijklmnopqrstuvwxyz"; i=$((i+1)); done'
want_bytes=$(sh -c "$lines" | wc -c)
start=$(now)
got_bytes=$(timeout -k 2 30 bash -o pipefail -c \
    '. "$1/env" && "$2" run -n node2 -- sh -c "$3" | { sleep 1; wc -c; }' \
    _ "$D" "$DMP" "$lines")
rc=$?
check "dmp run to a slow reader: every byte arrives ($got_bytes of $want_bytes)" \
    test "$got_bytes" = "$want_bytes"
check "dmp run to a slow reader: returns (exit $rc after $(since "$start") s)" \
    test "$rc" -eq 0

# The example program: one process per node, then on a private agent.
expect 0 "examples/hello on the cluster" \
    bash -c '. "$1/env" && exec "$2"' _ "$D" "$HELLO"
check "hello: one 'hello from' line per node" \
    test "$(grep -c '^hello from' "$T/out")" = 3
for n in node1 node2 node3; do
    check "hello: $n said hello once" \
        test "$(grep -c "^hello from .* on node $n " "$T/out")" = 1
done
rm -rf "$T/emb" && mkdir -p "$T/emb"
expect 0 "examples/hello with no cluster (embedded)" \
    env TMPDIR="$T/emb" "$HELLO"
check "embedded hello: exactly one 'hello from' line" \
    test "$(grep -c '^hello from' "$T/out")" = 1
check "embedded hello: its agent is gone afterwards" no_live_mentioning "$T/emb"
check "embedded hello: its runtime dir is removed" test -z "$(ls -A "$T/emb")"

# An agent that stops terminates its children; the program is told.
( . "$D/env" && exec "$DMP" run -n node1 -- sleep 60 ) >/dev/null 2>"$T/run.err" &
runpid=$!
start=$(now)
sleep_pid=""
while [ -z "$sleep_pid" ] && within "$start" 5; do
    sleep_pid=$(dmpc ps 2>/dev/null |
        awk '$1 == "node1" && $3 == "sleep" && $5 == "running" { print $2 }')
    [ -n "$sleep_pid" ] || sleep 0.02 # poll interval
done
check "a sleep runs on node1 (pid ${sleep_pid:-none})" test -n "$sleep_pid"
expect 0 "cluster down while it runs" "$DMP" cluster down --dir "$D"
start=$(now)
while alive_pid "$runpid" && within "$start" 10; do sleep 0.02; done
check "dmp run returns once its node is down" gone_pid "$runpid"
wait "$runpid" 2>/dev/null
check "the sleep was terminated with its agent" gone_pid "$sleep_pid"
check "cluster down: no live process mentions the cluster dir" \
    no_live_mentioning "$D"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
