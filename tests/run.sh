#!/usr/bin/env bash
# tests/run.sh - run test programs one by one, each under a timeout.
#
#   DMP_BUILD=build tests/run.sh build/tests/unit/test_x tests/integration/y.sh
#
# Binaries run directly, *.sh scripts with bash; DMP_BUILD is exported so
# scripts and support code find the build. A test fails on a non-zero exit
# or when it outlives its timeout (timeout(1) signals its whole process
# group, so agents a test started go with it). The last line is always
# "N passed, M failed"; the exit status is non-zero if anything failed or
# no test was given.
set -u

export DMP_BUILD="${DMP_BUILD:-build}"
limit="${DMP_TEST_TIMEOUT:-180}" # seconds per test program

if [ $# -eq 0 ]; then
    echo "run.sh: no tests given" >&2
    echo "0 passed, 0 failed"
    exit 2
fi

passed=0
failed=()
for t in "$@"; do
    name="${t#"$DMP_BUILD"/}" # tests/unit/test_x, not build/tests/...
    echo "== $name"
    case "$t" in
    *.sh) cmd=(bash "$t") ;;
    *) cmd=("$t") ;;
    esac
    # -k: a test that ignores SIGTERM is killed 10 s later.
    timeout -k 10 "$limit" "${cmd[@]}"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
    elif [ "$rc" -eq 124 ]; then
        echo "== $name: TIMEOUT after ${limit}s"
        failed+=("$name (TIMEOUT)")
    else
        echo "== $name: FAILED (exit $rc)"
        failed+=("$name (exit $rc)")
    fi
done

echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed:"
    printf '  %s\n' "${failed[@]}"
fi
echo "$passed passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
