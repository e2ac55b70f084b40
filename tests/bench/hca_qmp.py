"""A small QMP client for the benchmarks' by-hand baselines: commands
answered in order, events kept until asked for (tests/bench/*.sh put this
directory on PYTHONPATH)."""
import json
import select
import socket
import time


class Qmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.buf, self.events = b"", []
        self.read(10)
        self.cmd("qmp_capabilities")

    def read(self, timeout):
        while b"\n" not in self.buf:
            if not select.select([self.s], [], [], timeout)[0]:
                return None
            d = self.s.recv(65536)
            if not d:
                raise EOFError("QMP closed")
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, _cmd, **args):
        """Run command _cmd (arguments may include one called "name")."""
        self.s.sendall(json.dumps({"execute": _cmd, "arguments": args}).encode() + b"\n")
        while True:
            m = self.read(60)
            if m is None:
                raise TimeoutError(_cmd + ": no answer in 60 s")
            if "event" in m:
                self.events.append(m)
            elif "error" in m:
                raise RuntimeError(_cmd + ": " + m["error"]["desc"])
            else:
                return m["return"]

    def event(self, name, timeout, pred=lambda e: True):
        """The host-clock time of the first event NAME that PRED accepts
        (taken off the list), or None after TIMEOUT seconds."""
        end = time.time() + timeout
        while True:
            for e in self.events:
                if e["event"] == name and pred(e):
                    self.events.remove(e)
                    return e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6
            m = self.read(max(0, end - time.time()))
            if m is None:
                return None
            if "event" in m:
                self.events.append(m)
