#!/bin/sh
# The main job, `make demo`: a throwaway 3-node cluster on this machine,
# its membership, then pool maps over its nodes from the command line (a
# C function from a shared object, then a command per item), the guide's
# Pool program with its workers spread over the nodes, and a clean stop.
set -eu
B=${DMP_BUILD:-build}
dir=$(mktemp -d "${TMPDIR:-/tmp}/dmp-demo.XXXXXX")
trap '"$B/bin/dmp" cluster down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT INT TERM

"$B/bin/dmp" cluster up -n 3 --dir "$dir"
. "$dir/env"
export DMP_CLUSTER DMP_KEY DMP_SERVER_KEY
echo "\$ dmp nodes"
"$B/bin/dmp" nodes
echo
echo "\$ seq 1 12 | dmp map $B/examples/mathmod.so:collatz"
seq 1 12 | "$B/bin/dmp" map "$B/examples/mathmod.so:collatz" 2>&1
echo
echo "\$ dmp map -- sh -c 'echo \"\$1 squared is \$((\$1 * \$1)), on \$DMP_NODE\"' sh {} ::: 1 2 3 4 5 6"
"$B/bin/dmp" map -- sh -c 'echo "$1 squared is $(($1 * $1)), on $DMP_NODE"' \
    sh {} ::: 1 2 3 4 5 6 2>&1
echo
echo "\$ DMP_PLACE=spread $B/examples/pool      # the guide's Pool program"
DMP_PLACE=spread "$B/examples/pool"
echo
echo "\$ dmp ps -a          # where its workers ran (the 3-second ones)"
"$B/bin/dmp" ps -a |
    awk 'NR == 1 || ($3 ~ /^SpawnPoolWorker-/ && $NF + 0 >= 2.5)'
echo
"$B/bin/dmp" cluster down --dir "$dir"
