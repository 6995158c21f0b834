"""The gateway's SIP endpoint: listens, authorises, answers and drives calls."""
from __future__ import annotations

import logging
import math
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pjsua2 as pj

from sip.admission import BUSY_HERE, Admission
from sip.codecs import apply_codec_priorities
from sip.config import SipConfig
from sip.errors import SipNotRunningError, SipStartError
from sip.events import CallEvent, CallHandler, IncomingCall, PlaybackFinished, TransferUpdate
from sip.media import WavCache
from sip.message import addr_spec, app_headers, refer_to_uri, request_uri, split_host_port, uri_user
from sip.runtime import SipThread, base_config, describe, ioqueue_name, set_transaction_timeout, weakly
from sip.security import apply_srtp, tls_config
from sip.session import CallLeg, InboundCall, OutboundCall, call_op, notify_handler

log = logging.getLogger("puente.sip")

# pjsua needs a call slot even to reject a call with 403/486, so it gets a few
# more slots than the calls we accept.
_REJECT_HEADROOM = 8
# Agent legs (dial) are not counted against max_calls, but each takes a pjsua call slot: there
# are slots for one agent leg per admitted inbound call (see pjsua_max_calls).
_LEGS_PER_CALL = 1
# pjsua opens a call's RTP/RTCP sockets before onIncomingCall, and a closed
# socket stays in pjlib's ioqueue for 500 ms; the wheel's select() ioqueue
# holds 64, and running out is an assertion (abort). Holding each rejected
# INVITE's slot this long makes pjsua itself answer a flood with 486 (before
# any socket is opened) instead of churning sockets faster than they free.
_REJECT_AFTER_S = 0.1
# ... except INVITEs refused by per-source admission on an epoll build (handles to spare): those
# are answered inside onIncomingCall, so a flood from one source frees each pjsua slot (and its
# sockets) at once instead of filling the headroom that the other sources' calls need.

#: What becomes of a new INVITE: answered, or refused because its source is not in allowed_networks
#: (403), the node holds max_calls (486), its source holds max_calls_per_source (486), or its source
#: sends INVITEs over invite_rate_per_source (503 + Retry-After).
INVITE_OUTCOMES = ("admitted", "not_allowed", "node_full", "source_busy", "source_rate")


def pjsua_max_calls(max_calls: int, build_cap: int) -> int:
    """pjsua's call slots for ``max_calls`` inbound calls: each with its agent leg, plus the
    reject headroom, bounded by the build's PJSUA_MAX_CALLS (pjsua would lower it silently)."""
    return min((1 + _LEGS_PER_CALL) * max_calls + _REJECT_HEADROOM, build_cap)


class _Account(pj.Account):
    def __init__(self, on_incoming: Callable[[pj.OnIncomingCallParam], None]) -> None:
        super().__init__()
        self._on_incoming = on_incoming

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self._on_incoming(prm)


class _Rejected(pj.Call):
    """A call answered with a final error, owned until its DISCONNECTED (see ``weakly``)."""

    def __init__(self, account: pj.Account, pj_call_id: int, on_gone: Callable[[_Rejected], None]) -> None:
        super().__init__(account, pj_call_id)
        self._on_gone = on_gone

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._on_gone(self)


class SipEndpoint:
    """Answers SIP calls and turns them into frames and events for a :class:`CallHandler`.

    Every public method is thread-safe and returns immediately: it queues a
    command for the SIP thread. Results come back as events.
    """

    def __init__(self, config: SipConfig, handler: CallHandler) -> None:
        self.config = config
        self._handler = handler
        self._sip = SipThread("puente-sip", self)
        self._account: _Account | None = None
        self._log_writer: pj.LogWriter | None = None
        self._calls: dict[str, CallLeg] = {}  # the only owner of each call, either way; SIP thread only
        self._rejected: set[_Rejected] = set()  # SIP thread only
        self._admission = Admission(
            max_calls=config.max_calls_per_source, rate=config.invite_rate_per_source,
            burst=config.invite_burst_per_source, trusted_networks=config.trusted_networks,
        )  # SIP thread only
        # call_id -> source IP of each admitted inbound call (so its size is their count); SIP thread only
        self._sources: dict[str, str] = {}
        self._refuse_at_once = False  # see _REJECT_AFTER_S
        # What became of every new INVITE since start; keys fixed here, so other threads may copy it.
        self._offered = dict.fromkeys(INVITE_OUTCOMES, 0)
        self._active: tuple[str, ...] = ()  # snapshot for other threads
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._wavs: WavCache | None = None
        self._codecs: tuple[str, ...] = ()

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Start listening; raises :class:`SipStartError` (e.g. port in use)."""
        self._tmp = tempfile.TemporaryDirectory(prefix="puente-sip-")
        self._wavs = WavCache(Path(self._tmp.name))
        try:
            self._sip.start()
        except SipStartError:
            self._tmp.cleanup()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Hang up every call, wait up to ``timeout`` for the BYEs, then destroy the stack."""
        self._sip.stop(timeout)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> SipEndpoint:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def active_calls(self) -> tuple[str, ...]:
        """Our ids of the calls (inbound, and legs we dialled) that have not ended."""
        return self._active

    @property
    def invites(self) -> dict[str, int]:
        """New INVITEs since start, by outcome (:data:`INVITE_OUTCOMES`); safe from any thread."""
        return dict(self._offered)

    @property
    def frames_dropped(self) -> int:
        """Caller audio frames lost because the SIP thread read a call's tap too late (ended calls)."""
        return self._sip.taps.dropped

    @property
    def codecs(self) -> tuple[str, ...]:
        """The enabled pjsua codec ids, best first (known after start())."""
        return self._codecs

    # -- commands (any thread) ------------------------------------------------

    def dial(self, target_uri: str, headers: dict[str, str]) -> str:
        """Call ``target_uri`` (e.g. an agent) from the gateway's account, ``headers`` on the INVITE.

        Returns the new leg's id at once; it names the leg in events and commands like any call:
        DialProgress for 180/183, CallMediaReady once answered, CallEnded exactly once (refused,
        cancelled by ``hangup`` before the answer: 487, not sendable: 500, or ended after the
        answer). The leg's audio goes to no handler: ``bridge`` it to a call. Legs do not count
        against ``max_calls``.
        """
        leg_id = str(uuid.uuid4())
        headers = dict(headers)  # the caller's dict may change before the SIP thread reads it
        self._sip.submit(lambda: self._dial(leg_id, target_uri, headers))
        return leg_id

    def bridge(self, a_call_id: str, b_call_id: str) -> None:
        """Stop any prompt on either call and connect their audio both ways; if either has
        ended by then, nothing happens (its CallEnded was sent). When one of them ends, the
        other stays up, hearing nothing from it: hanging it up is the caller's decision."""
        self._sip.submit(lambda: self._bridge(a_call_id, b_call_id))

    def play(self, call_id: str, wav_path: Path) -> str:
        """Play a WAV (any PCM rate) to the call, replacing any current prompt.

        Returns the playback id that the matching PlaybackFinished carries.
        A WAV that is not 16 kHz mono 16-bit is converted with sox here, in
        the calling thread (ship prompts in that format to skip it).
        """
        if self._wavs is None:
            raise SipNotRunningError("start() the endpoint before playing prompts")
        wav = self._wavs.prepare(Path(wav_path))
        playback_id = uuid.uuid4().hex
        self._command(
            call_id,
            lambda call: call.play(playback_id, wav),
            gone=PlaybackFinished(call_id, playback_id, interrupted=True),
        )
        return playback_id

    def stop_playback(self, call_id: str) -> None:
        self._command(call_id, lambda call: call.stop_playback())

    def listen(self, call_id: str, on: bool) -> None:
        """Whether the caller's audio frames reach the handler (on by default). Off, they are
        dropped at the bridge's side of the SIP edge, and frame indices keep counting call time,
        so a later ``listen(call_id, True)`` resumes on the call's true timeline."""
        self._command(call_id, lambda call: call.listen(on))

    def hangup(self, call_id: str, status_code: int | None = None) -> None:
        """End the call: a BYE once answered; before that, an inbound call gets ``status_code``
        (default 603) as final response and a dialled leg is cancelled (it ends with 487)."""
        self._command(call_id, lambda call: call.hangup_local(status_code))

    def transfer(self, call_id: str, target_uri: str, headers: dict[str, str]) -> None:
        """Blind transfer with REFER; ``headers`` ride on the REFER and inside Refer-To.

        Progress arrives as TransferUpdate events; after a final 2xx the
        caller is with the target and the gateway should hang up its leg.
        """
        refer_to = refer_to_uri(target_uri, headers)
        self._command(
            call_id,
            lambda call: call.transfer(refer_to, headers),
            gone=TransferUpdate(call_id, 481, final=True),
        )

    # -- StackOwner (SIP thread) ---------------------------------------------

    def setup(self, ep: pj.Endpoint) -> None:
        cfg = self.config
        ep_cfg, self._log_writer = base_config(
            max_calls=pjsua_max_calls(cfg.max_calls, pj.UaConfig().maxCalls),  # UaConfig's default is the build's cap
            user_agent=cfg.user_agent, log_level=cfg.log_level, media_quality=cfg.media_quality,
        )
        ep.libInit(ep_cfg)
        if not set_transaction_timeout(cfg.ack_timeout_s):
            log.warning("cannot set pjsip's transaction timeout: an un-ACKed 200 OK holds its call 32 s")
        self._refuse_at_once = ioqueue_name().startswith("epoll")
        ep.audDevManager().setNullDev()
        ipv6 = ":" in cfg.host
        kinds = {
            "udp": pj.PJSIP_TRANSPORT_UDP6 if ipv6 else pj.PJSIP_TRANSPORT_UDP,
            "tcp": pj.PJSIP_TRANSPORT_TCP6 if ipv6 else pj.PJSIP_TRANSPORT_TCP,
            "tls": pj.PJSIP_TRANSPORT_TLS6 if ipv6 else pj.PJSIP_TRANSPORT_TLS,
        }
        for name in cfg.transports:
            tcfg = pj.TransportConfig()
            tcfg.port = cfg.tls_port if name == "tls" else cfg.port
            tcfg.boundAddress = cfg.host
            tcfg.publicAddress = cfg.advertised_host
            if name == "tls":
                tcfg.tlsConfig = tls_config(cfg.tls_cert_file, cfg.tls_key_file, cfg.tls_ca_file)
            try:
                ep.transportCreate(kinds[name], tcfg)
            except pj.Error as exc:
                raise SipStartError(f"cannot listen on {name} {cfg.host}:{tcfg.port}: {describe(exc)}") from None
        ep.libStart()
        try:
            selection = apply_codec_priorities(ep, cfg.codecs)
        except ValueError as exc:
            raise SipStartError(str(exc)) from None
        if selection.missing:
            log.warning("codecs not in this pjsua2 build, skipped: %s", ", ".join(selection.missing))
        self._codecs = selection.enabled
        log.info("SIP listening on %s:%d (%s)%s, codecs %s, SRTP %s", cfg.host, cfg.port, "+".join(cfg.transports),
                 f", TLS on {cfg.tls_port}" if "tls" in cfg.transports else "", self._codecs, cfg.srtp)

        acfg = pj.AccountConfig()
        host = f"[{cfg.advertised_host}]" if ":" in cfg.advertised_host else cfg.advertised_host
        acfg.idUri = f"sip:puente@{host}:{cfg.port}"
        media = acfg.mediaConfig.transportConfig
        media.port = cfg.rtp_port
        media.portRange = cfg.rtp_port_range
        media.boundAddress = cfg.host
        media.publicAddress = cfg.advertised_host
        apply_srtp(acfg.mediaConfig, cfg.srtp, cfg.srtp_require_tls)
        self._account = _Account(self._on_incoming)
        self._account.create(acfg, True)

    def begin_shutdown(self) -> None:
        for call in list(self._calls.values()):
            try:
                call.hangup_local()
            except pj.Error as exc:
                log.warning("hangup of %s at shutdown failed: %s", call.call_id, describe(exc))

    def shutdown_settled(self) -> bool:
        return not self._calls and not self._rejected

    def release(self) -> None:
        for call in self._calls.values():
            call.detach_media()
        self._calls.clear()
        self._sources.clear()
        self._rejected.clear()
        self._publish()
        self._account = None

    # -- internals (SIP thread) -----------------------------------------------

    def _on_incoming(self, prm: pj.OnIncomingCallParam) -> None:
        source, _ = split_host_port(prm.rdata.srcAddress)
        if not self.config.is_allowed(source):
            log.warning("rejecting call from %s: not in allowed_networks", source)
            self._offered["not_allowed"] += 1
            self._reject(prm.callId, 403)
            return
        if len(self._sources) >= self.config.max_calls:  # inbound calls only: agent legs have their own slots
            log.warning("rejecting call from %s: %d calls already up", source, len(self._sources))
            self._offered["node_full"] += 1
            self._reject(prm.callId, 486)
            return
        refusal = self._admission.admit(source)
        if refusal is not None:
            self._offered["source_busy" if refusal.status_code == BUSY_HERE else "source_rate"] += 1
            # A flood is logged on a log scale: the 1st, 10th, 100th… INVITE refused in a row.
            level = logging.WARNING if math.log10(refusal.in_a_row).is_integer() else logging.DEBUG
            log.log(level, "refusing call from %s with %d (%d in a row): %s", source, refusal.status_code,
                    refusal.in_a_row, refusal.reason)
            self._reject(prm.callId, refusal.status_code, refusal.headers, at_once=self._refuse_at_once)
            return
        assert self._account is not None
        self._offered["admitted"] += 1
        call_id = str(uuid.uuid4())
        call = InboundCall(self._account, prm.callId, call_id, self._handler, self._sip, self._on_call_ended)
        self._calls[call_id] = call
        self._sources[call_id] = source
        self._publish()
        info = call.getInfo()
        message = prm.rdata.wholeMsg
        incoming = IncomingCall(
            call_id=call_id,
            sip_call_id=info.callIdString,
            from_uri=addr_spec(info.remoteUri),
            to_uri=addr_spec(info.localUri),
            to_user=uri_user(request_uri(message)) or uri_user(info.localUri),
            remote_address=source,
            headers=app_headers(message),
        )
        try:
            self._handler.on_incoming(incoming)
        except Exception:
            log.exception("call handler refused %s", call_id)
            call.notify = False
            call.answer_with(500)
            return
        call.answer_with(180)
        # Answer from the command loop, outside pjsua's incoming-call callback.
        answer = weakly(call.answer_with)
        self._sip.call_later(0.0, lambda: answer(200))

    def _reject(
        self, pj_call_id: int, status_code: int, headers: dict[str, str] | None = None, at_once: bool = False
    ) -> None:
        call = _Rejected(self._account, pj_call_id, self._rejected.discard)
        self._rejected.add(call)
        if at_once:  # inside onIncomingCall: pjsua frees the slot and its RTP sockets on return
            call.answer(call_op(status_code, headers))
            return
        answer = weakly(call.answer)
        self._sip.call_later(_REJECT_AFTER_S, lambda: answer(call_op(status_code, headers)))

    def _dial(self, leg_id: str, target_uri: str, headers: dict[str, str]) -> None:
        assert self._account is not None
        leg = OutboundCall(self._account, leg_id, self._handler, self._sip, self._on_call_ended)
        self._calls[leg_id] = leg
        self._publish()
        leg.place(target_uri, headers)  # a failure ends the leg (CallEnded) through _on_call_ended

    def _bridge(self, a_call_id: str, b_call_id: str) -> None:
        a, b = self._calls.get(a_call_id), self._calls.get(b_call_id)
        if a is None or b is None or a is b:
            log.info("bridge of %s and %s ignored: %s", a_call_id, b_call_id,
                     "the same call" if a is b and a is not None else "a call has ended")
            return
        a.bridge(b)

    def _on_call_ended(self, call: CallLeg) -> None:
        # Inside the call's DISCONNECTED callback: after this, nothing owns it.
        self._calls.pop(call.call_id, None)
        source = self._sources.pop(call.call_id, None)
        if source is not None:
            self._admission.release(source)
        self._sip.retire(*call.detach_media())
        self._publish()

    def _command(
        self, call_id: str, action: Callable[[CallLeg], None], gone: CallEvent | None = None
    ) -> None:
        """Queue ``action`` for the call; if the call is gone by then, report ``gone`` instead."""

        def run() -> None:
            call = self._calls.get(call_id)
            if call is not None:
                action(call)
            elif gone is not None:
                notify_handler(self._handler, gone)
            else:
                log.debug("command for unknown or ended call %s ignored", call_id)

        self._sip.submit(run)

    def _publish(self) -> None:
        self._active = tuple(self._calls)
