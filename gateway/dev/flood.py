"""A flood of INVITEs from one untrusted loopback address, for tests and benchmarks of admission.

The INVITEs come from one UDP socket and never ACK anything (an attacker's, or a broken client's);
every final answer is collected with its timing. Loopback only: the Via, Contact and SDP name
``host``, so every response stays on 127.0.0.0/8.
"""
from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field

FLOOD_HOST = "127.0.0.2"  # any 127.0.0.0/8 address works on lo; not in the default trusted_networks


@dataclass
class Answer:
    code: int
    sent_at: float
    at: float
    headers: dict[str, str] = field(default_factory=dict)


class Flood:
    """INVITEs from one UDP socket on ``host`` (FLOOD_HOST) that never ACK anything; BYEs are
    answered with 200 only with ``answer_byes``."""

    def __init__(self, uas_port: int, host: str = FLOOD_HOST, answer_byes: bool = False) -> None:
        self.uas_port = uas_port
        self.host = host
        self.answer_byes = answer_byes
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.sent: dict[str, float] = {}  # Call-ID -> when sent
        self.finals: dict[str, Answer] = {}  # Call-ID -> first final response
        self.byes: list[str] = []
        self._n = 0

    def invite(self) -> str:
        self._n += 1
        host = self.host
        call_id = f"flood-{self._n}-{self.port}@{host}"
        sdp = (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
               f"m=audio {self.port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        msg = (f"INVITE sip:es@127.0.0.1:{self.uas_port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {host}:{self.port};branch=z9hG4bK-{self._n}-{self.port}\r\n"
               "Max-Forwards: 70\r\n"
               f"From: <sip:flood@{host}>;tag=f{self._n}\r\nTo: <sip:es@127.0.0.1>\r\n"
               f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:flood@{host}:{self.port}>\r\n"
               f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
        self.sent[call_id] = time.monotonic()
        self.sock.sendto(msg.encode(), ("127.0.0.1", self.uas_port))
        return call_id

    def collect(self, until: float, want: int | None = None) -> None:
        """Read answers until ``until`` (monotonic) or until ``want`` final responses arrived."""
        while time.monotonic() < until and (want is None or len(self.finals) < want):
            self.sock.settimeout(max(0.01, until - time.monotonic()))
            try:
                raw, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            head = raw.decode(errors="replace").split("\r\n\r\n", 1)[0].split("\r\n")
            headers = dict(line.split(":", 1) for line in head[1:] if ":" in line)
            headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
            if head[0].startswith("BYE "):
                self.byes.append(headers.get("call-id", ""))
                if self.answer_byes:
                    copied = [line for line in head[1:] if line.split(":", 1)[0].strip().lower()
                              in ("via", "from", "to", "call-id", "cseq")]
                    self.sock.sendto("\r\n".join(["SIP/2.0 200 OK", *copied, "Content-Length: 0", "", ""]).encode(),
                                     peer)
                continue
            match = re.match(r"SIP/2\.0 (\d{3})", head[0])
            call_id = headers.get("call-id", "")
            if match and int(match.group(1)) >= 200 and call_id not in self.finals and call_id in self.sent:
                self.finals[call_id] = Answer(int(match.group(1)), self.sent[call_id], time.monotonic(), headers)

    def close(self) -> None:
        self.sock.close()


def burst(port: int, count: int, *, host: str = FLOOD_HOST, wait_s: float = 3.0) -> Flood:
    """``count`` INVITEs at once from ``host`` to ``127.0.0.1:port``, their final answers collected
    (for at most ``wait_s``); the socket is closed after."""
    flood = Flood(port, host)
    try:
        for _ in range(count):
            flood.invite()
        flood.collect(time.monotonic() + wait_s, want=count)
    finally:
        flood.close()
    return flood
