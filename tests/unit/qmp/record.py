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
while it runs a command, so a "\r\n" after `quit` is left unread and QEMU's
exit then resets the socket instead of closing it cleanly.

Usage (from anywhere; stdlib only):
    python3 tests/unit/qmp/record.py [OUTDIR]        # default: this directory
    QEMU=/path/to/qemu-system-x86_64 python3 ...     # another binary
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


class Recorder:
    """One QEMU process, one monitor connection, one transcript."""

    def __init__(self, name, extra_args=()):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="qmp-rec-")
        self.sock_path = os.path.join(self.tmp, "qmp.sock")
        self.argv = [QEMU] + BASE_ARGS + list(extra_args) + [
            "-qmp", "unix:%s,server=on,wait=off" % self.sock_path]
        self.lines = []
        self.buf = b""
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        self.sock = self._connect()

    def _connect(self):
        deadline = time.monotonic() + IO_TIMEOUT_S
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.sock_path)
                return s
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("QEMU monitor socket never appeared")
                time.sleep(0.05)

    def header(self, what):
        version = subprocess.run([QEMU, "--version"], capture_output=True,
                                 text=True, check=True).stdout.splitlines()[0]
        argv = " ".join(a.replace(self.sock_path, "PATH") for a in self.argv)
        self.lines += ["# %s" % what,
                       "# Recorded from %s" % version,
                       "# by tests/unit/qmp/record.py running:",
                       "#   %s" % argv]

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

    def _record_until_reply(self):
        while True:
            line = self._recv_line(IO_TIMEOUT_S)
            if line is None:
                raise RuntimeError("%s: no reply from QEMU" % self.name)
            self.lines.append("< " + line)
            msg = json.loads(line)
            if "return" in msg or "error" in msg or "QMP" in msg:
                return msg

    def _record_settle(self):
        self.eof = False
        while True:
            line = self._recv_line(SETTLE_S)
            if line is None:
                break
            self.lines.append("< " + line)
        if self.eof:
            self.lines.append("! close")

    def greeting(self):
        self._record_until_reply()

    def cmd(self, execute, arguments=None):
        msg = {"execute": execute}
        if arguments is not None:
            msg["arguments"] = arguments
        text = json.dumps(msg)
        self.lines.append("> " + text)
        self.sock.sendall(text.encode())
        reply = self._record_until_reply()
        self._record_settle()
        return reply

    def finish(self, outdir):
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=IO_TIMEOUT_S)
        shutil.rmtree(self.tmp, ignore_errors=True)
        path = os.path.join(outdir, self.name + ".qmp")
        with open(path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        print("wrote", path)


def scenario(outdir, name, what, steps, extra_args=()):
    rec = Recorder(name, extra_args)
    try:
        rec.header(what)
        rec.greeting()
        rec.cmd("qmp_capabilities")
        steps(rec)
    finally:
        rec.finish(outdir)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(
        os.path.abspath(__file__))
    scenario(outdir, "connect", "greeting and capabilities negotiation",
             lambda r: None)
    scenario(outdir, "query_status", "query-status on a running VM",
             lambda r: r.cmd("query-status"))

    def lifecycle(r):
        r.cmd("stop")
        r.cmd("query-status")
        r.cmd("cont")
    scenario(outdir, "lifecycle", "stop / query-status (paused) / cont",
             lifecycle)

    def powerdown(r):
        r.cmd("system_powerdown")
        r.cmd("quit")
    scenario(outdir, "powerdown",
             "system_powerdown (no guest OS answers it), then quit",
             powerdown)

    def errors(r):
        r.cmd("no-such-command")
        r.cmd("query-status", {"bogus": 1})
    scenario(outdir, "errors", "an unknown command, then a bad argument",
             errors)
    scenario(outdir, "query_version", "query-version",
             lambda r: r.cmd("query-version"))


if __name__ == "__main__":
    main()
