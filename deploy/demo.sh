#!/bin/sh
# The main job, `make demo`: a throwaway 3-node cluster on this machine,
# the cluster's membership as `dmp nodes` reports it, then a clean stop.
set -eu
B=${DMP_BUILD:-build}
dir=$(mktemp -d "${TMPDIR:-/tmp}/dmp-demo.XXXXXX")
trap '"$B/bin/dmp" cluster down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT INT TERM

"$B/bin/dmp" cluster up -n 3 --dir "$dir"
. "$dir/env"
echo "\$ dmp nodes"
"$B/bin/dmp" nodes
"$B/bin/dmp" cluster down --dir "$dir"
