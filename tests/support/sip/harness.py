"""Driving the UAS harness process from pytest."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gateway.dev.harness import free_ports

ROOT = Path(__file__).resolve().parents[3]

Event = dict


class UasProcess:
    """``tests/support/sip/uas.py`` in a subprocess, with its JSON events collected."""

    def __init__(self, *args: str, port: int | None = None, rtp_port: int | None = None) -> None:
        ports = free_ports(2)
        self.port = port or ports[0]
        self.rtp_port = rtp_port or ports[1] // 2 * 2
        cmd = [sys.executable, "-m", "tests.support.sip.uas", "--port", str(self.port),
               "--rtp-port", str(self.rtp_port), *args]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.events: list[Event] = []
        self._new: queue.Queue[Event] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read_events, daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True).start()

    @property
    def uri_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def uri(self, user: str = "es") -> str:
        return f"sip:{user}@{self.uri_host}"

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def _read_events(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            self.events.append(event)
            self._new.put(event)

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        """The first event (past or future) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None and self._new.empty():
                raise AssertionError(f"no matching event within {timeout} s; events: {self.events}\n"
                                     f"stderr: {self.stderr[-2000:]}")
            try:
                self._new.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                pass

    def wait_event(self, name: str, timeout: float = 10.0, **fields: object) -> Event:
        return self.wait_for(lambda e: e["event"] == name and all(e.get(k) == v for k, v in fields.items()),
                             timeout)

    def named(self, name: str, **fields: object) -> list[Event]:
        return [e for e in self.events if e["event"] == name and all(e.get(k) == v for k, v in fields.items())]

    def started(self) -> Event:
        return self.wait_for(lambda e: e["event"] in ("started", "start_error"), timeout=15.0)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def __enter__(self) -> UasProcess:
        event = self.started()
        if event["event"] != "started":
            self.stop()
            raise RuntimeError(f"UAS did not start: {event}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.stop()
