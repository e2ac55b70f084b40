#!/usr/bin/env bash
# Longer fuzzing runs (make fuzz): each target for SECONDS, corpus kept in
# build/fuzz/corpus so runs build on each other.
set -euo pipefail
dir=${1:?usage: run.sh FUZZ_BUILD_DIR SECONDS}
secs=${2:-300}
top=$(cd "$(dirname "$0")/../.." && pwd)
for t in "$dir"/fuzz_*; do
	name=$(basename "$t")
	mkdir -p "$dir/corpus/$name"
	cp -n "$top/tests/fuzz/corpus/$name"/* "$dir/corpus/$name"/ 2>/dev/null || true
	echo "fuzzing $name for ${secs}s"
	"$t" -max_total_time="$secs" "$dir/corpus/$name"
done
