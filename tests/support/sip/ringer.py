"""A SIP UAS over UDP that rings and never answers: 180 to every INVITE, and to a CANCEL
200 plus 487 for the INVITE. Raw text, so it can live in a process that already has an
Endpoint (pjsua2 allows one per process); for tests of calls that are never answered."""
from __future__ import annotations

import socket
import threading

_DIALOG_HEADERS = ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")


class Ringer:
    """Listens on 127.0.0.1 (any free port); every request it got is in ``requests``."""

    def __init__(self, user: str = "ring") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.user = user
        self.requests: list[str] = []
        self._invites: dict[str, str] = {}  # Call-ID -> the INVITE, to answer it 487 on CANCEL
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ringer", daemon=True)

    @property
    def uri(self) -> str:
        # transport=udp: a large INVITE would otherwise be tried over TCP first (RFC 3261 18.1.1).
        return f"sip:{self.user}@127.0.0.1:{self.port};transport=udp"

    def methods(self) -> list[str]:
        return [r.split(" ", 1)[0] for r in self.requests]

    def __enter__(self) -> Ringer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            message = data.decode(errors="replace")
            if message.startswith("SIP/2.0"):
                continue  # a response: we send no requests
            self.requests.append(message)
            method = message.split(" ", 1)[0]
            call_id = _header(message, "call-id", "i")
            if method == "INVITE":
                if call_id not in self._invites:
                    self._invites[call_id] = message
                self._reply(message, peer, "180 Ringing")
            elif method == "CANCEL":
                self._reply(message, peer, "200 OK")
                invite = self._invites.get(call_id)
                if invite is not None:
                    self._reply(invite, peer, "487 Request Terminated")
            elif method not in ("ACK",):
                self._reply(message, peer, "200 OK")

    def _reply(self, request: str, peer: tuple[str, int], status: str) -> None:
        lines = [f"SIP/2.0 {status}"]
        for line in request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
            name = line.split(":", 1)[0].strip().lower()
            if name in _DIALOG_HEADERS:
                if name in ("to", "t") and ";tag=" not in line:
                    line += ";tag=ringer"
                lines.append(line)
        lines += [f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>", "Content-Length: 0", "", ""]
        self._sock.sendto("\r\n".join(lines).encode(), peer)


def _header(message: str, *names: str) -> str:
    for line in message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in names:
            return value.strip()
    return ""
