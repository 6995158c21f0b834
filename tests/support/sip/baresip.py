"""Drive Debian's ``baresip`` as an independent SIP client for tests.

baresip 1.0's ``aufile`` source needs a WAV at the codec's rate (8 kHz mono
S16 for G.711), so the clip is converted with sox and padded with silence to
keep the call up after speaking; when the file ends baresip hangs up itself.
Events come from the ``ctrl_tcp`` module (netstring-framed JSON).
"""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.dev.harness import free_ports

MODULE_DIR = Path("/usr/lib/baresip/modules")
_CONFIG = """\
module_path		/usr/lib/baresip/modules
poll_method		epoll
sip_listen		127.0.0.1:{sip_port}
call_max_calls		1
audio_source		aufile,{wav}
audio_player		aubridge,discard
audio_alert		aubridge,discard
module			g711.so
module			aufile.so
module			aubridge.so
module_tmp		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:{ctrl_port}
"""


@dataclass
class BaresipResult:
    connected: bool = False
    closed_reason: str | None = None  # CALL_CLOSED's param; None if the call never closed
    duration_s: float = 0.0
    events: list[dict] = field(default_factory=list)
    output: str = ""

    @property
    def ended_by_remote(self) -> bool:
        # baresip closes with an empty/"Connection reset by peer" reason on a BYE
        # it received, and "end of file" when its own audio file ran out.
        return self.closed_reason is not None and "end of file" not in self.closed_reason


def available() -> bool:
    return shutil.which("baresip") is not None and shutil.which("sox") is not None


def modules() -> set[str]:
    """The baresip modules installed (e.g. ``srtp``, ``opus``)."""
    return {p.stem for p in MODULE_DIR.glob("*.so")}


def call(uri: str, wav: Path, *, pad_s: float = 1.0, timeout: float = 30.0, user: str = "baresip",
         extra_modules: tuple[str, ...] = (), extra_config: str = "", account_params: str = "") -> BaresipResult:
    """Dial ``uri`` as ``sip:{user}@127.0.0.1``, speak ``wav`` then ``pad_s`` of silence;
    return when the call closes.

    ``extra_modules`` are loaded too (``"srtp"``), ``extra_config`` lines are appended to the
    config (``sip_cafile``, ``sip_certificate``), ``account_params`` to the account
    (``";mediaenc=srtp-mand"``).
    """
    with tempfile.TemporaryDirectory(prefix="baresip-") as tmp:
        conf = Path(tmp)
        audio = conf / "speech.wav"
        subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(audio),
                        "pad", "0", str(pad_s)], check=True, capture_output=True)
        (conf / "accounts").write_text(f"<sip:{user}@127.0.0.1>;regint=0{account_params}\n")
        deadline = time.monotonic() + timeout
        for _ in range(_START_ATTEMPTS):
            result = _run(conf, audio, uri, deadline, extra_modules, extra_config)
            # The free ports were picked before baresip bound them: another process may have won one.
            if result.events or "Address already in use" not in result.output:
                return result
        return result


_START_ATTEMPTS = 3


def _run(conf: Path, audio: Path, uri: str, deadline: float, extra_modules: tuple[str, ...],
         extra_config: str) -> BaresipResult:
    result = BaresipResult()
    sip_port, ctrl_port = free_ports(2)
    config = _CONFIG.format(sip_port=sip_port, wav=audio, ctrl_port=ctrl_port)
    config += "".join(f"module\t\t\t{name}.so\n" for name in extra_modules) + extra_config
    (conf / "config").write_text(config)
    proc = subprocess.Popen(["baresip", "-f", str(conf)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _dial_and_follow(proc, ctrl_port, uri, result, deadline)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            result.output = proc.communicate(timeout=5)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            result.output = proc.communicate()[0]
    return result


def _dial_and_follow(proc: subprocess.Popen, ctrl_port: int, uri: str, result: BaresipResult, deadline: float) -> None:
    sock = _connect(proc, ctrl_port, deadline)
    if sock is None:
        return
    established_at = 0.0
    buffer = b""
    with sock:
        # Dial only once connected, so no event is missed.
        command = json.dumps({"command": "dial", "params": uri, "token": "dial"}).encode()
        sock.sendall(b"%d:%s," % (len(command), command))
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                break
            if not chunk:
                break
            buffer += chunk
            messages, buffer = _netstrings(buffer)
            for message in messages:
                event = json.loads(message)
                if not event.get("event"):
                    continue  # a command response
                result.events.append(event)
                kind = event.get("type")
                if kind == "CALL_ESTABLISHED":
                    result.connected = True
                    established_at = time.monotonic()
                elif kind == "CALL_CLOSED":
                    result.closed_reason = event.get("param", "")
                    if established_at:
                        result.duration_s = time.monotonic() - established_at
                    return


def _connect(proc: subprocess.Popen, port: int, deadline: float) -> socket.socket | None:
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=1.0)
        except OSError:
            time.sleep(0.05)  # baresip still starting
    return None


def _netstrings(data: bytes) -> tuple[list[bytes], bytes]:
    """Split complete ``len:payload,`` netstrings off ``data``."""
    out: list[bytes] = []
    while b":" in data:
        size_text, rest = data.split(b":", 1)
        size = int(size_text)
        if len(rest) < size + 1:
            break
        out.append(rest[:size])
        data = rest[size + 1:]
    return out, data


_PHONE_CONFIG = """\
module_path		/usr/lib/baresip/modules
poll_method		epoll
sip_listen		127.0.0.1:{sip_port}
audio_player		aubridge,discard
audio_source		aubridge,discard
module			g711.so
module			aubridge.so
module_tmp		account.so
"""


def registered_phone(conf: Path, registrar: str, user: str, password: str, *, auto_answer: bool = False) -> tuple[subprocess.Popen, int]:
    """Start baresip as ``user`` registering with ``password`` at ``registrar`` (``host:port``), its
    files in ``conf``; returns the process (SIGINT makes it unregister and quit) and its SIP port."""
    (sip_port,) = free_ports(1)
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "config").write_text(_PHONE_CONFIG.format(sip_port=sip_port))
    answer = ";answermode=auto" if auto_answer else ""
    (conf / "accounts").write_text(f"<sip:{user}@{registrar}>;auth_pass={password};regint=60{answer}\n")
    process = subprocess.Popen(["baresip", "-f", str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    return process, sip_port
