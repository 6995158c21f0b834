"""What the SIP edge tells its consumer, and the consumer interface itself."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

from models.audio import AudioFrame


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A new INVITE that passed the source-address and capacity checks.

    ``call_id`` is ours (uuid4) and names the call in every later event and
    command; ``sip_call_id`` is the dialog's Call-ID for correlating with logs.
    ``from_uri``/``to_uri`` are bare URIs (no display name or tag); ``to_user``
    is the user part of the Request-URI (the number or service dialled).
    ``headers`` keeps the identity headers (P-Asserted-Identity, User-Agent, …)
    and every ``X-*`` header, keyed by their canonical names.
    """

    call_id: str
    sip_call_id: str
    from_uri: str
    to_uri: str
    to_user: str
    remote_address: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallMediaReady:
    """Audio is flowing; frames follow and prompts can be played."""

    call_id: str


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    call_id: str
    digit: str
    method: Literal["rfc4733", "sip_info"]


@dataclass(frozen=True, slots=True)
class PlaybackFinished:
    """A prompt ended; ``interrupted`` when it was stopped, replaced or its call ended."""

    call_id: str
    playback_id: str
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class TransferUpdate:
    """Progress of a REFER, from the transferee's NOTIFY sipfrag (202 = accepted)."""

    call_id: str
    status_code: int
    final: bool


@dataclass(frozen=True, slots=True)
class DialProgress:
    """A provisional response (180 ringing, 183 progress) to a call we placed; once per code."""

    call_id: str
    status_code: int


@dataclass(frozen=True, slots=True)
class CallEnded:
    """Sent exactly once per call that reached the handler, and per placed call (``dial``):
    refused (``sip_status`` 486, 603, 404, 408…), cancelled by us (487), never sent (500) or
    ended after the answer."""

    call_id: str
    by: Literal["remote", "local"]
    reason: str
    sip_status: int


CallEvent: TypeAlias = CallMediaReady | DialProgress | DtmfReceived | PlaybackFinished | TransferUpdate | CallEnded


class CallHandler(Protocol):
    """The consumer of calls (the gateway, a test harness).

    Invoked on pjsua2's threads — ``on_incoming``/``on_event`` on the SIP
    thread, ``on_frame`` on the media clock thread — so implementations must
    return quickly and never block: hand work to a queue.
    """

    def on_incoming(self, call: IncomingCall) -> None: ...

    def on_frame(self, call_id: str, frame: AudioFrame) -> None: ...

    def on_event(self, event: CallEvent) -> None: ...
