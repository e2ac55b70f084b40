#!/usr/bin/env bash
# Run every test of hca and print one closing line: "N passed, N failed".
#   tests/run.sh BUILD_DIR [unit|asan|fuzz|integration ...]
# Unit tests (cmocka) and integration scripts speak TAP; a binary that dies
# without reporting counts as a failure, never as a pass.
set -uo pipefail

BUILD=${1:?usage: tests/run.sh BUILD_DIR [suite...]}
shift
SUITES=("$@")
[ ${#SUITES[@]} -gt 0 ] || SUITES=(unit asan fuzz integration)
TOP=$(cd "$(dirname "$0")/.." && pwd)
PASSED=0
FAILED=0
SKIPPED=0
FAILURES=()
FUZZ_SECONDS=${FUZZ_SECONDS:-5} # a smoke run; make fuzz runs long

# Count TAP lines of one test program; its output is kept in a log.
run_tap() {
	local name=$1 log ok notok skipped rc t0=$SECONDS
	shift
	log=$(mktemp)
	"$@" >"$log" 2>&1
	rc=$?
	echo "# [$name] $((SECONDS - t0)) s"
	# a skipped test is not a pass
	ok=$(grep -E '^ok [0-9]+' "$log" | grep -cviE '#[[:space:]]*skip')
	skipped=$(grep -E '^ok [0-9]+' "$log" | grep -ciE '#[[:space:]]*skip')
	notok=$(grep -cE '^not ok [0-9]+' "$log")
	if [ "$rc" -ne 0 ] && [ "$notok" -eq 0 ]; then
		notok=1 # it died or failed without saying which test
		echo "not ok - $name exited with status $rc"
	fi
	grep -E '^(not )?ok [0-9]+' "$log" | sed "s|^|[$name] |"
	if [ "$notok" -gt 0 ]; then
		FAILURES+=("$name")
		echo "---- output of $name ----"
		tail -n 60 "$log"
		echo "----"
	fi
	PASSED=$((PASSED + ok))
	FAILED=$((FAILED + notok))
	SKIPPED=$((SKIPPED + skipped))
	rm -f "$log"
}

run_unit() {
	local dir=$1 t
	for t in "$dir"/tests/test_*; do
		[ -x "$t" ] || continue
		CMOCKA_MESSAGE_OUTPUT=TAP HCA_TOP="$TOP" run_tap "$(basename "$dir")/$(basename "$t")" "$t"
	done
}

# A short libFuzzer run per target: a crash or leak is a failure.
fuzz_one() {
	local t=$1 corpus
	corpus=$(mktemp -d)
	cp "$TOP"/tests/fuzz/corpus/"$(basename "$t")"/* "$corpus"/ 2>/dev/null
	if "$t" -max_total_time="$FUZZ_SECONDS" -print_final_stats=0 "$corpus" >/dev/null 2>"$corpus.log"; then
		echo "ok 1 - $(basename "$t") ran ${FUZZ_SECONDS}s without a crash"
	else
		echo "not ok 1 - $(basename "$t") found a crash"
		tail -n 40 "$corpus.log"
	fi
	rm -rf "$corpus" "$corpus.log"
}

# The lane a script asks for in a line "# hca-test-lane: side|last":
# side scripts run one after another beside the main lane, from the start
# (two devclusters at once: each has its own namespaces and directories);
# last ones run alone once the side lane is over (timing-sensitive);
# the rest run in the main lane. CI's 30 minutes need the overlap.
lane_of() { sed -n 's/^# hca-test-lane: *\([a-z]*\).*/\1/p' "$1" | head -n1; }

run_integration() {
	local t lane side=() main=() last=() sidelog sideres
	for t in "$TOP"/tests/integration/test_*.sh; do
		[ -f "$t" ] || continue
		lane=$(lane_of "$t")
		case "$lane" in
		side) side+=("$t") ;;
		last) last+=("$t") ;;
		*) main+=("$t") ;;
		esac
	done
	sidelog=$(mktemp)
	sideres=$(mktemp)
	(
		PASSED=0 FAILED=0 SKIPPED=0 FAILURES=()
		for t in "${side[@]}"; do
			run_tap "integration/$(basename "$t" .sh)" bash "$t" "$BUILD"
		done
		echo "$PASSED $FAILED $SKIPPED ${FAILURES[*]}" >"$sideres"
	) >"$sidelog" 2>&1 &
	for t in "${main[@]}"; do
		run_tap "integration/$(basename "$t" .sh)" bash "$t" "$BUILD"
	done
	wait
	cat "$sidelog"
	local p f k names
	if read -r p f k names <"$sideres"; then
		PASSED=$((PASSED + p))
		FAILED=$((FAILED + f))
		SKIPPED=$((SKIPPED + k))
		[ -z "$names" ] || FAILURES+=($names)
	else
		echo "not ok - the side lane of the integration tests did not report"
		FAILED=$((FAILED + 1))
		FAILURES+=("integration/side-lane")
	fi
	rm -f "$sidelog" "$sideres"
	for t in "${last[@]}"; do
		run_tap "integration/$(basename "$t" .sh)" bash "$t" "$BUILD"
	done
}

for s in "${SUITES[@]}"; do
	case "$s" in
	unit) run_unit "$BUILD" ;;
	asan) [ -d "$BUILD/asan/tests" ] && run_unit "$BUILD/asan" ;;
	fuzz)
		for t in "$BUILD"/fuzz/fuzz_*; do
			[ -x "$t" ] && run_tap "fuzz/$(basename "$t")" fuzz_one "$t"
		done ;;
	integration) run_integration ;;
	*) echo "unknown suite '$s'" >&2; exit 2 ;;
	esac
done

if [ ${#FAILURES[@]} -gt 0 ]; then
	echo "failed: ${FAILURES[*]}"
fi
if [ "$SKIPPED" -gt 0 ]; then
	echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
else
	echo "$PASSED passed, $FAILED failed"
fi
[ "$FAILED" -eq 0 ]
