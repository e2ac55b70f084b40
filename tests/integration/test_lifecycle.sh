#!/usr/bin/env bash
# A VM's life on one node, for real: define, start, the workload counts,
# hcad is killed with -9 and restarted under the running VM, pause, resume,
# console, shutdown, journal verified, forced stop, undefine.
. "$(dirname "$0")/lib.sh"
hca_setup

check "hcad answers node info" "$HCACTL" node info
check "node info says tcg and why" bash -c "'$HCACTL' node info --json | grep -q '\"accel\": *\"tcg\"'"
check "define web1" define_guest web1
check "web1 listed as stopped" bash -c "'$HCACTL' vm list | grep -qE '^web1 +stopped'"
check "its volume was created" test -f "$(volume_path web1)"
check "start web1" "$HCACTL" vm start web1
check "web1 is running" test "$(vm_state web1)" = running
check "show says accel tcg" test "$(vm_field web1 accel)" = tcg
check "workload prints its counter" wait_for 30 counter_above web1 0
check "counter advances" counter_advances web1

pid=$(qemu_pid web1)
hcad_kill9
check "QEMU survives kill -9 of hcad" proc_alive "$pid"
check "guest keeps counting without hcad" counter_advances web1
hcad_start
check "restarted hcad re-attaches: running" wait_for 10 bash -c "[ \"\$('$HCACTL' vm show web1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"state\"])')\" = running ]"
check "same QEMU pid after re-attach" test "$(vm_field web1 pid)" = "$pid"

check "pause web1" "$HCACTL" vm pause web1
check "web1 is paused" test "$(vm_state web1)" = paused
c1=$(counter web1); sleep 1.5; c2=$(counter web1)
check "paused guest does not count ($c1 -> $c2)" test "$c1" -eq "$c2"
expect_fail "pause twice is refused" "already paused" "$HCACTL" vm pause web1
expect_fail "shutdown of a paused VM is refused" "web1" "$HCACTL" vm shutdown web1
check "resume web1" "$HCACTL" vm resume web1
check "counter advances after resume" counter_advances web1

out=$(timeout 10 "$HCACTL" vm console web1 </dev/null 2>/dev/null | head -c 20000)
check "console shows the workload" grep -q 'hca-workload' <<<"$out"

check "shutdown web1 (ACPI)" "$HCACTL" vm shutdown web1 --timeout 30
check "web1 stopped after shutdown" test "$(vm_state web1)" = stopped
check "no QEMU left after shutdown" wait_for 5 bash -c "! [ -e /proc/$pid ] || [ \"\$(awk '{print \$3}' /proc/$pid/stat)\" = Z ]"
check "journal verifies: one boot, no gap" test "$(journal_field "$(volume_path web1)" ok)-$(journal_field "$(volume_path web1)" boots)-$(journal_field "$(volume_path web1)" gaps)" = "True-1-0"

check "start again" "$HCACTL" vm start web1
check "second boot counts" wait_for 30 counter_advances web1
check "stop --force" "$HCACTL" vm stop web1 --force
check "web1 stopped after forced stop" test "$(vm_state web1)" = stopped
check "journal still verifies after a forced stop, two boots" test "$(journal_field "$(volume_path web1)" ok)-$(journal_field "$(volume_path web1)" boots)" = "True-2"

check "start and stop (QMP quit)" bash -c "'$HCACTL' vm start web1 >/dev/null && '$HCACTL' vm stop web1 >/dev/null"
check "undefine web1" "$HCACTL" vm undefine web1
check "volume removed with the VM" test ! -e "$(volume_path web1)"
check "list is empty" test -z "$("$HCACTL" vm list --json | python3 -c 'import json,sys; print(" ".join(v["name"] for v in json.load(sys.stdin)))')"

hcad_stop
check "hcad exits on SIGTERM" test ! -e "/proc/$HCAD_PID"
hca_done
