"""A real gateway in its own process on free loopback ports, for tests and benchmarks.

The gateway holds the process's one pjsua2 endpoint, so whoever calls it (``puente call``,
a test, a benchmark) runs in another process; this module starts and stops that process.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]


class GatewayFailed(RuntimeError):
    pass


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports, each free for both UDP and TCP on ``host`` right now (SIP
    listens on both). The probes stay bound until all are chosen, so no two are the same."""
    probes: list[socket.socket] = []
    try:
        for _ in range(50 * count):
            if len(probes) == count:
                return [probe.getsockname()[1] for probe in probes]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((host, 0))
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, udp.getsockname()[1]))
                except OSError:
                    udp.close()
                    continue
            probes.append(udp)
        raise RuntimeError(f"no {count} free ports on {host}")
    finally:
        for probe in probes:
            probe.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` right now."""
    return free_ports(1, host)[0]


@dataclass
class RunningGateway:
    process: subprocess.Popen
    sip_port: int
    api: str
    db_path: Path
    config_path: Path
    log_path: Path

    def uri(self, extension: str = "es") -> str:
        return f"sip:{extension}@127.0.0.1:{self.sip_port}"

    def call(self, extension: str = "es", *args: str, timeout: float = 90.0) -> dict:
        """``puente call`` in its own process (one pjsua2 endpoint per process)."""
        proc = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "call", self.uri(extension), "--api", self.api, *args],
            capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        )
        lines = proc.stdout.strip().splitlines()
        if not lines:
            raise GatewayFailed(f"puente call printed nothing (exit {proc.returncode}): {proc.stderr[-2000:]}")
        result = json.loads(lines[-1])
        result["_exit"] = proc.returncode
        return result

    def get(self, path: str, **params) -> dict | list:
        return httpx.get(self.api + path, params=params, timeout=10).raise_for_status().json()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise
        return self.process.returncode


def start_gateway(tmp: Path, **settings: dict) -> RunningGateway:
    """Start ``puente serve`` with ``settings`` (section → values) merged over test-friendly defaults."""
    sip_port, http_port = free_ports(2)
    config = {
        "sip": {"port": sip_port, "rtp_port": 20000 + (sip_port % 20) * 1000},
        "http": {"port": http_port},
        "database": {"url": f"sqlite:///{tmp / 'puente.db'}"},
        # Short silences keep the no-input tests quick; the defaults are documented in the README.
        "endpointing": {"no_input_ms": 2500},
        "routing": {"hold_timeout_s": 1.5},
        "whatsapp": {"per_user_interval_s": 0.5},
    }
    for section, values in settings.items():
        config.setdefault(section, {}).update(values)
    config_path = tmp / "puente.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp / "gateway.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUENTE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path)],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, cwd=ROOT, env=env,
    )
    gateway = RunningGateway(process, sip_port, f"http://127.0.0.1:{http_port}", tmp / "puente.db", config_path, log_path)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise GatewayFailed(f"gateway exited with {process.returncode}: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(gateway.api + "/healthz", timeout=1).json().get("status") == "ok":
                return gateway
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    gateway.stop(signal.SIGKILL)
    raise GatewayFailed(f"gateway did not become healthy: {log_path.read_text()[-3000:]}")
