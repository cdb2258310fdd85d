#!/bin/sh
# tests/bench/run.sh - runs the benchmarks against a throwaway local cluster.
#
#   DMP_BUILD=build tests/bench/run.sh build/tests/bench/bench_*
#
# Starts a 3-node cluster with the built `dmp cluster up` in a temporary
# directory (torn down by the trap, whatever happens), points the
# benchmarks at it through the cluster's env file (plus DMP_AGENT, node1's
# local socket, and DMP_BENCH_CLUSTER_DIR), runs each benchmark
# binary and the Python multiprocessing comparisons, echoes every
# `name value unit` line as it comes, and ends with the median of every
# number over the runs and a table of dmp beside its references (rows in
# tests/bench/table.txt).
# Benchmarks report numbers; they never fail on timing. Exit status: 0, or
# 1 when a benchmark could not run or an operation failed.
#
#   DMP_BENCH_RUNS=3     how many times the whole set runs (the C and
#                        Python sides alternate, so drift hits both)
#   DMP_BENCH_CPUS=LIST  pin the cluster, benchmarks and Python to these
#                        CPUs (taskset -c LIST); unpinned by default
#   DMP_BENCH_TIMEOUT=90 seconds each benchmark may take
#
# As root, the cross-host numbers of bench_pipe and bench_queue are also
# measured between two network namespaces joined by a veth pair
# (netns_bench.sh; rows "two hosts" in the table).
set -u

here=$(cd "$(dirname "$0")" && pwd)
DMP_BUILD=${DMP_BUILD:-build}
DMP_BUILD=$(cd "$DMP_BUILD" && pwd) || exit 1
export DMP_BUILD
export DMP_DMPD="$DMP_BUILD/bin/dmpd"
dmp="$DMP_BUILD/bin/dmp"
per_bench_timeout=${DMP_BENCH_TIMEOUT:-90}
runs=${DMP_BENCH_RUNS:-3}
pin=
if [ -n "${DMP_BENCH_CPUS:-}" ]; then
    pin="taskset -c $DMP_BENCH_CPUS"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dmp-bench.XXXXXX") || exit 1
cluster="$tmp/cluster"
results="$tmp/results"
cleanup() {
    "$dmp" cluster down --dir "$cluster" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# The benchmarks must not talk to whatever cluster the caller uses.
unset DMP_CLUSTER DMP_KEY DMP_SERVER_KEY DMP_AGENT

status=0
: >"$results"

# Runs one benchmark; keeps its `name value unit` lines in $results.
run() {
    label=$1
    shift
    echo "## $label"
    timeout "$per_bench_timeout" $pin "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    cat "$tmp/out"
    grep -E '^[A-Za-z0-9_.]+ [-0-9.eE+]+ [^ ]+$' "$tmp/out" >>"$results"
    sed 's/^/#   /' "$tmp/err" >&2
    if [ "$rc" -ne 0 ]; then
        echo "# $label: exit status $rc" >&2
        status=1
    fi
}

if ! $pin "$dmp" cluster up -n 3 --dir "$cluster" >"$tmp/up" 2>&1; then
    cat "$tmp/up" >&2
    echo "# cannot start the benchmark cluster" >&2
    exit 1
fi
. "$cluster/env"
export DMP_CLUSTER DMP_KEY DMP_SERVER_KEY
export DMP_BENCH_CLUSTER_DIR="$cluster"
# dmp_init prefers DMP_AGENT: programs that just call dmp_init talk to
# node1 over its local socket, as a job started on node1 would. Benchmarks
# that want tcp use DMP_CLUSTER themselves.
export DMP_AGENT="ipc://$cluster/run/node1/dmpd.sock"
echo "# cluster: 3 nodes in $cluster, node1 at $DMP_CLUSTER"
placement=unpinned
[ -n "$pin" ] && placement="pinned to CPUs $DMP_BENCH_CPUS"
echo "# machine: $(nproc) cores, $(uname -sr), $(python3 --version 2>&1)," \
    "$placement"

i=1
while [ "$i" -le "$runs" ]; do
    for bench in "$@"; do
        run "$(basename "$bench") (run $i of $runs)" "$bench"
    done
    for py in "$here"/py_*.py; do
        [ -e "$py" ] && run "$(basename "$py") (run $i of $runs)" python3 "$py"
    done
    i=$((i + 1))
done

# The cross-host numbers again between two real hosts (network
# namespaces over veth, as root; netns_bench.sh skips otherwise).
cross=""
for bench in "$@"; do
    case "$(basename "$bench")" in bench_pipe|bench_queue) cross="$cross $bench" ;; esac
done
if [ -n "$cross" ]; then
    echo "## netns_bench.sh ($runs run(s))"
    $pin "$here/netns_bench.sh" $cross >"$tmp/netns" 2>"$tmp/err" || status=1
    cat "$tmp/netns"
    sed 's/^/#   /' "$tmp/err" >&2
    grep -E '^[A-Za-z0-9_.]+ [-0-9.eE+]+ [^ ]+$' "$tmp/netns" >>"$results"
fi

# The median of each number over the runs, in first-seen order.
awk '{ if (!($1 in n)) { order[++k] = $1; unit[$1] = $3 }
       v[$1, ++n[$1]] = $2 }
     END {
       for (i = 1; i <= k; i++) {
         name = order[i]; m = n[name]
         for (a = 1; a <= m; a++) s[a] = v[name, a] + 0
         for (a = 2; a <= m; a++)   # insertion sort: m is small
           for (b = a; b > 1 && s[b - 1] > s[b]; b--) {
             t = s[b]; s[b] = s[b - 1]; s[b - 1] = t }
         med = m % 2 ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
         printf "%s %.6g %s\n", name, med, unit[name]
       }
     }' "$results" >"$tmp/medians"
echo
echo "## medians over $runs run(s)"
cat "$tmp/medians"

# ---- the table: rows from table.txt ------------------------------------
echo
echo "## dmp beside its references (ratio = dmp / reference: for rates" \
    "higher is better, for times and memory lower; see the last column)"
grep -v '^#' "$here/table.txt" | awk -F'|' -v results="$tmp/medians" '
    BEGIN {
        while ((getline line < results) > 0) {
            split(line, f, " ")
            val[f[1]] = f[2]
            unit[f[1]] = f[3]
        }
        printf "%-36s %14s  %-28s %12s %8s  %s\n", "operation", "dmp",
               "reference", "", "ratio", "better"
    }
    NF >= 4 {
        d = $2
        dv = (d in val) ? val[d] " " unit[d] : "-"
        if ($4 ~ /^target:/) {
            r = substr($4, 8) + 0
            have_r = 1
            rv = substr($4, 8) " " ((d in unit) ? unit[d] : "")
        } else {
            have_r = ($4 in val)
            r = have_r ? val[$4] + 0 : 0
            rv = have_r ? val[$4] " " unit[$4] : "-"
        }
        ratio = "-"
        if ((d in val) && have_r && r > 0)
            ratio = sprintf("%.2fx", val[d] / r)
        printf "%-36s %14s  %-28s %12s %8s  %s\n", $1, dv, $3, rv, ratio, $5
    }'
exit $status
