#!/usr/bin/env bash
# tests/fuzz/run.sh - run libFuzzer harnesses for a bounded time each and
# merge what they found into the committed corpus (make fuzz).
#
#   tests/fuzz/run.sh FUZZ_DIR SECONDS NAME...
#
# FUZZ_DIR holds the binaries fuzz_NAME (make fuzz builds them there);
# each runs SECONDS on tests/fuzz/corpus/NAME plus a scratch directory
# FUZZ_DIR/work/NAME, then inputs that add coverage are merged into the
# corpus (-merge=1: the corpus only grows by inputs that reach new code).
# A crash, leak, timeout or failed check leaves its input in
# FUZZ_DIR/artifacts/ and fails the run once every harness has had its
# turn. FUZZ_FLAGS adds libFuzzer flags (e.g. FUZZ_FLAGS=-fork=4).
set -u

if [ $# -lt 3 ]; then
    echo "usage: tests/fuzz/run.sh FUZZ_DIR SECONDS NAME..." >&2
    exit 2
fi
dir=$1
secs=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/artifacts" "$dir/logs"
# The harnesses write files (config, keys, the cache) for every input:
# on tmpfs that is several times faster (fsync is free there).
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
    export TMPDIR=/dev/shm
fi

# Largest input per harness: enough for every interesting structure,
# small enough to keep executions fast and the corpus small.
max_len() {
    case "$1" in
    ring_header) echo 8192 ;; # a header page and a small data area
    shared_header) echo 10240 ;; # header, holders and a few elements
    keys) echo 17000 ;;       # past the 16 KiB bound of key files
    config) echo 3000 ;;      # past the 1 KiB line limit
    *) echo 4096 ;;
    esac
}

failed=()
for name in "$@"; do
    bin="$dir/fuzz_$name"
    corpus="$here/corpus/$name"
    work="$dir/work/$name"
    log="$dir/logs/$name.log"
    mkdir -p "$work" "$corpus"
    len=$(max_len "$name")
    echo "== fuzz $name: ${secs}s, max_len $len, corpus $(find "$corpus" -type f | wc -l) files"
    # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of flags
    "$bin" -max_total_time="$secs" -max_len="$len" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/$name-" ${FUZZ_FLAGS:-} \
        "$work" "$corpus" >"$log" 2>&1
    rc=$?
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" | sed 's/^/   /'
    if [ "$rc" -ne 0 ]; then
        echo "== fuzz $name: FAILED (exit $rc), see $log"
        grep -E 'fuzz check failed|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|Test unit written' "$log" | head -5 | sed 's/^/   /'
        failed+=("$name")
    fi
    # Keep what adds coverage, whether or not the run ended in a crash.
    before=$(find "$corpus" -type f | wc -l)
    "$bin" -merge=1 -max_len="$len" "$corpus" "$work" >>"$log" 2>&1 ||
        echo "== fuzz $name: merge failed, see $log"
    after=$(find "$corpus" -type f | wc -l)
    echo "   corpus: $before -> $after files"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: findings in: ${failed[*]} (inputs in $dir/artifacts/)"
    exit 1
fi
echo "fuzz: no findings"
