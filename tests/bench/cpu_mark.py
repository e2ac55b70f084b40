#!/usr/bin/env python3
"""CPU accounting for benches on one machine: where the cores went.

cpu_mark.py mark FILE [CLASS=PATTERN ...]
    writes the machine's busy/idle ticks (/proc/stat) and, for each class,
    the CPU ticks (utime + stime) of the live processes whose command line
    contains PATTERN (first class that matches wins), as JSON
cpu_mark.py diff FILE_A FILE_B
    prints "busy=C.CC idle=C.CC CLASS=C.CC ... other=C.CC": cores used on
    average between the two marks (other: busy time no class accounts for,
    processes that ended included)

A process's ticks are counted only if it lived at both marks, so a class
shows what its long-lived processes used; what short-lived ones used lands
in "other".
"""
import json, os, sys, time


def proc_ticks():
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open("/proc/%s/stat" % pid) as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rindex(")") + 2:].split()
        # fields after the command: state is 3, utime 14, stime 15, start 22
        out[pid] = (cmd, int(rest[11]) + int(rest[12]), rest[19])
    return out


def mark(path, classes):
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    idle = cpu[3] + cpu[4]
    busy = sum(cpu[:8]) - idle
    procs = {}
    for pid, (cmd, ticks, start) in proc_ticks().items():
        for name, pat in classes:
            if pat in cmd:
                procs[pid + ":" + start] = [name, ticks]
                break
    json.dump({"t": time.monotonic(), "busy": busy, "idle": idle,
               "classes": [c[0] for c in classes], "procs": procs}, open(path, "w"))


def diff(a_path, b_path):
    a, b = json.load(open(a_path)), json.load(open(b_path))
    hz = os.sysconf("SC_CLK_TCK")
    dt = b["t"] - a["t"]
    if dt <= 0:
        print("busy=0 idle=0")
        return
    cores = lambda ticks: ticks / hz / dt
    per = dict((c, 0) for c in b["classes"])
    for key, (name, ticks) in b["procs"].items():
        if key in a["procs"]:
            per[name] += ticks - a["procs"][key][1]
    busy = b["busy"] - a["busy"]
    parts = ["busy=%.2f" % cores(busy), "idle=%.2f" % cores(b["idle"] - a["idle"])]
    parts += ["%s=%.2f" % (c, cores(per[c])) for c in b["classes"]]
    parts.append("other=%.2f" % cores(busy - sum(per.values())))
    print(" ".join(parts))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "mark":
        mark(sys.argv[2], [tuple(c.split("=", 1)) for c in sys.argv[3:]])
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        diff(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
