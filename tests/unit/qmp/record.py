#!/usr/bin/env python3
"""Record the QMP transcripts replayed by tests/unit/util_fake_qmp.c.

Each scenario starts a real QEMU with its monitor on a unix socket, plays a
few commands, and writes what crossed the socket in the transcript format:

    < LINE        QEMU sent LINE (verbatim, timestamps as recorded)
    > JSON        the client sent JSON (no "id": the fake copies the client's)
    ! close       QEMU closed the connection

Commands are sent without an "id", so QEMU's replies carry none either; the
fake inserts the id of the command being answered when it replays them.
Like hv_qmp.c, commands are sent with no line terminator: QEMU stops reading
while it runs a command, so a "\\r\\n" after `quit` is left unread and QEMU's
exit then resets the socket instead of closing it cleanly.

The vm_* scenarios talk the way hypervisor/hv_vm.c does, so its tests can
replay them: query-status right after negotiating, and one more query-status
after each STOP event and each MIGRATION event whose status is completed,
failed or cancelled (hv_vm.c: event_apply). Change one, change the other.

Usage (from anywhere; stdlib only):
    python3 tests/unit/qmp/record.py [OUTDIR [SCENARIO...]]  # default: this
                                                            # directory, all
    QEMU=/path/to/qemu-system-x86_64 python3 ...            # another binary
Review the result as a diff: timestamps and the package string change,
the message shapes should not.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

QEMU = os.environ.get("QEMU", "qemu-system-x86_64")
BASE_ARGS = ["-accel", "tcg", "-machine", "q35", "-m", "64", "-nodefaults",
             "-no-user-config", "-display", "none"]
# Trailing events (RESUME after cont, SHUTDOWN after quit) may follow the
# reply; wait this long after each reply so they land in the transcript.
SETTLE_S = 0.3
IO_TIMEOUT_S = 10.0
# What makes hv_vm.c ask for the run state again.
REFRESH_MIGRATION = ("completed", "failed", "cancelled")


class Qemu:
    """One QEMU process with @monitors QMP sockets, run in its own directory
    (so that relative paths such as a migration's "unix:mig.sock" resolve
    there; share @cwd between two QEMUs to migrate from one to the other)."""

    def __init__(self, extra_args=(), monitors=1, cwd=None):
        self.tmp = tempfile.mkdtemp(prefix="qmp-rec-")
        self.cwd = cwd or self.tmp
        self.socks = [os.path.join(self.tmp, "qmp%s.sock" % (i or ""))
                      for i in range(monitors)]
        self.argv = [QEMU] + BASE_ARGS + list(extra_args)
        for path in self.socks:
            self.argv += ["-qmp", "unix:%s,server=on,wait=off" % path]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     cwd=self.cwd)

    def shown_argv(self):
        text = " ".join(self.argv)
        for i, path in enumerate(self.socks):
            text = text.replace(path, "PATH%s" % (i + 1 if i else ""))
        return text

    def finish(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=IO_TIMEOUT_S)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Recorder:
    """One monitor connection of a Qemu, one transcript. @hv_vm: talk the
    way hv_vm.c does (see the top of this file)."""

    def __init__(self, name, qemu, monitor=0, hv_vm=False):
        self.name = name
        self.qemu = qemu
        self.hv_vm = hv_vm
        self.lines = []
        self.buf = b""
        self.eof = False
        self.outstanding = 0  # commands sent and not answered yet
        self.events = []      # every event seen, parsed
        self.sock = self._connect(qemu.socks[monitor])

    def _connect(self, path):
        deadline = time.monotonic() + IO_TIMEOUT_S
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                return s
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline or self.qemu.proc.poll() is not None:
                    raise RuntimeError("QEMU monitor socket never appeared")
                time.sleep(0.05)

    def header(self, what):
        version = subprocess.run([QEMU, "--version"], capture_output=True,
                                 text=True, check=True).stdout.splitlines()[0]
        self.lines += ["# %s" % what,
                       "# Recorded from %s" % version,
                       "# by tests/unit/qmp/record.py running:",
                       "#   %s" % self.qemu.shown_argv()]

    def note(self, text):
        self.lines.append("# " + text)

    def _recv_line(self, timeout):
        """One line from QEMU without its terminator; None on EOF or timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode()

    def _take(self, line):
        """Record one line from QEMU and react to it as hv_vm.c would."""
        self.lines.append("< " + line)
        msg = json.loads(line)
        if "return" in msg or "error" in msg:
            self.outstanding -= 1
        if "event" in msg:
            self.events.append(msg)
            if self.hv_vm and self._refreshes(msg):
                self.send("query-status")
        return msg

    @staticmethod
    def _refreshes(msg):
        status = msg.get("data", {}).get("status")
        return msg["event"] == "STOP" or (
            msg["event"] == "MIGRATION" and status in REFRESH_MIGRATION)

    def send(self, execute, arguments=None):
        msg = {"execute": execute}
        if arguments is not None:
            msg["arguments"] = arguments
        text = json.dumps(msg)
        self.lines.append("> " + text)
        self.sock.sendall(text.encode())
        self.outstanding += 1

    def drain(self):
        """Every reply, then whatever follows within SETTLE_S."""
        while self.outstanding > 0:
            line = self._recv_line(IO_TIMEOUT_S)
            if line is None:
                raise RuntimeError("%s: no reply from QEMU" % self.name)
            self._take(line)
        while not self.eof:
            line = self._recv_line(SETTLE_S)
            if line is None:
                break
            self._take(line)
            while self.outstanding > 0 and not self.eof:
                line = self._recv_line(IO_TIMEOUT_S)
                if line is None:
                    break
                self._take(line)
        if self.eof:
            self.lines.append("! close")

    def greeting(self):
        line = self._recv_line(IO_TIMEOUT_S)
        if line is None:
            raise RuntimeError("%s: no greeting" % self.name)
        self.lines.append("< " + line)

    def cmd(self, execute, arguments=None):
        self.send(execute, arguments)
        self.drain()

    def wait_event(self, name, status=None):
        """Record until event @name (with data.status @status) came, then drain."""
        deadline = time.monotonic() + IO_TIMEOUT_S
        def seen():
            return any(e["event"] == name and
                       (status is None or e.get("data", {}).get("status") == status)
                       for e in self.events)
        while not seen():
            line = self._recv_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError("%s: no %s %s event" % (self.name, name, status))
            self._take(line)
        self.drain()

    def write(self, outdir):
        self.sock.close()
        path = os.path.join(outdir, self.name + ".qmp")
        with open(path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        print("wrote", path)


def open_monitor(name, what, qemu, monitor=0, hv_vm=False):
    rec = Recorder(name, qemu, monitor, hv_vm)
    rec.header(what)
    rec.greeting()
    rec.cmd("qmp_capabilities")
    if hv_vm:
        rec.cmd("query-status")
    return rec


def scenario(outdir, name, what, steps, extra_args=(), hv_vm=False):
    qemu = Qemu(extra_args)
    rec = None
    try:
        rec = open_monitor(name, what, qemu, hv_vm=hv_vm)
        steps(rec)
    finally:
        if rec:
            rec.write(outdir)
        qemu.finish()


EVENTS_ON = {"capabilities": [{"capability": "events", "state": True}]}
# The source also stops before the switchover, so that finish-migrate (paused
# by the migration) is seen for certain, not only when the query wins a race.
SRC_CAPS = {"capabilities": [{"capability": "events", "state": True},
                             {"capability": "pause-before-switchover",
                              "state": True}]}
MIG_URI = {"uri": "unix:mig.sock"}


def migrate(outdir, dest_args, names):
    """Migrate a running QEMU to one started with -incoming defer (and
    @dest_args), both over hv_vm-style monitors. @names: transcript name for
    the destination, the source, and a monitor of the source attached after
    the migration; None: not written."""
    dst_name, src_name, late_name = names
    dst = Qemu(["-incoming", "defer"] + list(dest_args))
    src = Qemu(monitors=2, cwd=dst.tmp)
    recs = []
    try:
        d = open_monitor(dst_name or "-", "incoming migration (%s)" %
                         " ".join(["-incoming defer"] + list(dest_args)),
                         dst, hv_vm=True)
        recs.append((dst_name, d))
        s = open_monitor(src_name or "-", "outgoing migration stopping before "
                         "the switchover, then quit", src, hv_vm=True)
        recs.append((src_name, s))
        d.cmd("migrate-set-capabilities", EVENTS_ON)
        d.cmd("migrate-incoming", MIG_URI)
        s.cmd("migrate-set-capabilities", SRC_CAPS)
        s.cmd("migrate", MIG_URI)
        s.wait_event("MIGRATION", "pre-switchover")
        s.cmd("migrate-continue", {"state": "pre-switchover"})
        s.wait_event("MIGRATION", "completed")
        d.wait_event("MIGRATION", "completed")
        late = open_monitor(late_name or "-", "a source after its migration "
                            "(a second monitor attached afterwards)",
                            src, monitor=1, hv_vm=True)
        recs.append((late_name, late))
        s.cmd("quit")
    finally:
        for name, rec in recs:
            if name:
                rec.write(outdir)
        src.finish()
        dst.finish()


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(
        os.path.abspath(__file__))
    only = set(sys.argv[2:])

    def want(*names):
        return not only or only & set(names)

    if want("connect"):
        scenario(outdir, "connect", "greeting and capabilities negotiation",
                 lambda r: None)
    if want("query_status"):
        scenario(outdir, "query_status", "query-status on a running VM",
                 lambda r: r.cmd("query-status"))

    def lifecycle(r):
        r.cmd("stop")
        r.cmd("query-status")
        r.cmd("cont")
    if want("lifecycle"):
        scenario(outdir, "lifecycle", "stop / query-status (paused) / cont",
                 lifecycle)

    def powerdown(r):
        r.cmd("system_powerdown")
        r.cmd("quit")
    if want("powerdown"):
        scenario(outdir, "powerdown",
                 "system_powerdown (no guest OS answers it), then quit",
                 powerdown)

    def errors(r):
        r.cmd("no-such-command")
        r.cmd("query-status", {"bogus": 1})
    if want("errors"):
        scenario(outdir, "errors", "an unknown command, then a bad argument",
                 errors)
    if want("query_version"):
        scenario(outdir, "query_version", "query-version",
                 lambda r: r.cmd("query-version"))

    def vm_qmp(r):
        r.cmd("query-version")
        r.cmd("migrate-incoming", MIG_URI)
    if want("vm_qmp"):
        scenario(outdir, "vm_qmp", "hv_vm: attach, then a command that "
                 "succeeds and one QEMU refuses", vm_qmp, hv_vm=True)

    def vm_pause_qmp(r):
        # hv_vm_pause() and hv_vm_qmp() back to back, before any reply
        r.send("stop")
        r.send("query-version")
        r.drain()
    if want("vm_pause_qmp"):
        scenario(outdir, "vm_pause_qmp", "hv_vm: attach, then a pause and a "
                 "command pipelined", vm_pause_qmp, hv_vm=True)

    if want("vm_incoming", "vm_migrate_src", "vm_attach_postmigrate"):
        migrate(outdir, [], ("vm_incoming", "vm_migrate_src",
                             "vm_attach_postmigrate"))
    if want("vm_incoming_paused"):
        migrate(outdir, ["-S"], ("vm_incoming_paused", None, None))


if __name__ == "__main__":
    main()
