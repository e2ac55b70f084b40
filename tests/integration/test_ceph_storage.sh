#!/usr/bin/env bash
# The storage backends against a real Ceph: a one-node devcluster (mon,
# memstore OSD, cephx, pool hca), and inside its node the state store
# contract with the rados backend and the volume tests with the rbd backend
# (QEMU's rbd driver opens what they create), from the normal build and,
# when it exists, the ASan build. Each unit test's TAP line is re-emitted
# here as one check; a binary that dies without saying which test failed
# is a failure too.
#   tests/integration/test_ceph_storage.sh BUILD_DIR
. "$(dirname "$0")/lib.sh"

DC_DIR=/tmp/hca-cst.$$ # at most 35 characters, as devcluster.sh wants
export HCA_DC_DIR=$DC_DIR
export HCA_DC_NETNS=hcst$$ # not the default, so another devcluster may run
DEVCLUSTER=$TOP/deploy/devcluster.sh
CONF=$DC_DIR/ceph/ceph.conf

[ "$(id -u)" -eq 0 ] || { echo "Bail out! needs root (network namespaces, Ceph daemons)"; exit 1; }
for b in test_sto_store test_sto_vol; do
	[ -x "$BUILD/tests/$b" ] || { echo "Bail out! no $BUILD/tests/$b: build first"; exit 1; }
done

cleanup() { "$DEVCLUSTER" down >/dev/null 2>&1; }
trap cleanup EXIT

if ! out=$("$DEVCLUSTER" up 1 --no-hcad 2>&1); then
	echo "Bail out! devcluster up failed: $(printf '%s\n' "$out" | tail -n 1)"
	exit 1
fi
ok "devcluster with Ceph up (conf $CONF)"

# run_unit LABEL BINARY: BINARY inside node1 with the Ceph backends selected;
# its TAP lines become checks here, its output a diagnostic when it fails.
run_unit() {
	local label=$1 bin=$2 log rc line seen=0 failed=0
	log=$(mktemp)
	"$DEVCLUSTER" exec node1 -- env CMOCKA_MESSAGE_OUTPUT=TAP \
		HCA_TEST_STORE_BACKENDS=rados HCA_TEST_VOL_BACKENDS=rbd \
		HCA_TEST_CEPH_CONF="$CONF" HCA_TEST_CEPH_POOL=hca HCA_TEST_CEPH_ID=admin \
		"$bin" >"$log" 2>&1
	rc=$?
	while IFS= read -r line; do
		case "$line" in
		"ok "[0-9]*)
			seen=$((seen + 1))
			ok "[$label] ${line#ok * - }" ;;
		"not ok "[0-9]*)
			seen=$((seen + 1))
			failed=$((failed + 1))
			not_ok "[$label] ${line#not ok * - }" ;;
		esac
	done <"$log"
	if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
		not_ok "[$label] exited with status $rc after $seen tests"
		failed=1
	elif [ "$seen" -eq 0 ]; then
		not_ok "[$label] ran no tests"
		failed=1
	fi
	[ "$failed" -eq 0 ] || sed 's/^/# /' "$log" | tail -n 60
	rm -f "$log"
}

run_unit sto_store/rados "$BUILD/tests/test_sto_store"
run_unit sto_vol/rbd "$BUILD/tests/test_sto_vol"
if [ -x "$BUILD/asan/tests/test_sto_store" ] && [ -x "$BUILD/asan/tests/test_sto_vol" ]; then
	run_unit asan/sto_store/rados "$BUILD/asan/tests/test_sto_store"
	run_unit asan/sto_vol/rbd "$BUILD/asan/tests/test_sto_vol"
fi

# Nothing of the tests is left in the pool: every namespace they used is
# empty again, and no test image remains.
leftovers() {
	"$DEVCLUSTER" exec node1 -- rados -c "$CONF" -p hca ls --all |
		awk '$1 ~ /^t[0-9]+x[0-9]+\./' | head -n 5
	"$DEVCLUSTER" exec node1 -- rbd -c "$CONF" -p hca ls | grep -E '^t[0-9]+x[0-9]+-' | head -n 5
}
left=$(leftovers 2>&1)
check "the tests left no objects or images behind" test -z "$left"
[ -z "$left" ] || diag "left: $left"

cleanup
check "devcluster down" test ! -e "$DC_DIR"
trap - EXIT
hca_done
