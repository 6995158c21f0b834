"""An outbound SIP caller for the CLI, tests and benchmarks.

It owns the process's pjsua2 Endpoint (so it cannot share a process with a
:class:`~sip.endpoint.SipEndpoint`), binds to an ephemeral port, and plays a
:class:`CallScript` into each call: speech from a WAV, DTMF, a hangup, what to
do with a REFER. ``call()`` blocks and may run from several threads at once.
"""
from __future__ import annotations

import array
import functools
import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pjsua2 as pj

from models.audio import FRAME_MS, AudioFrame
from sip.codecs import apply_codec_priorities, available_codecs
from sip.config import SipConfig
from sip.errors import SipNotRunningError, SipStartError
from sip.media import Player, WavCache
from sip.message import app_headers, parse_headers
from sip.runtime import SipThread, base_config, describe, weakly
from sip.security import apply_srtp, srtp_suite, tls_config
from sip.session import call_op

log = logging.getLogger("puente.sip.caller")

DtmfMethod = Literal["rfc4733", "sip_info"]
_DEFAULT_CODECS = ("G722/16000", "opus/48000", "PCMU/8000", "PCMA/8000")
# A received frame counts as audible (e.g. a prompt) above this RMS (≈ -50 dBFS).
_AUDIBLE_RMS = 100.0
# Every call opens two RTP/RTCP sockets, and a closed one lingers 500 ms in
# pjlib's 64-slot select() ioqueue; overflowing it aborts the process. Spacing
# placements keeps quickly rejected calls from churning through it.
_MIN_CALL_SPACING_S = 0.025
# Ports tried for the caller's UDP+TCP pair before giving up (a clash is rare; 20 in a row is not).
_PORT_ATTEMPTS = 20


@dataclass(frozen=True)
class CallScript:
    """What the caller does during one call; times are seconds after the 200 OK."""

    wav: Path | None = None  # spoken once, speak_after_s after answer; silence otherwise
    speak_after_s: float = 1.0
    from_uri: str | None = None  # caller ID in From, e.g. "sip:+5215555550123@127.0.0.1"
    headers: dict[str, str] = field(default_factory=dict)  # extra INVITE headers
    dtmf: list[tuple[float, str, DtmfMethod]] = field(default_factory=list)  # (at_s, digits, method)
    hangup_after_s: float | None = None
    max_duration_s: float = 60.0  # from the INVITE; then the caller hangs up ("timeout")
    follow_transfer: bool = False  # accept a REFER (202) and call the target, or decline (603)
    # The reply to the far end's question: once ``wav`` has been spoken, the first time the far
    # end starts talking again (after a pause), wait ``reply_after_s``, then say ``reply_wav``
    # and/or key ``reply_dtmf`` (RFC 4733). Timing follows the conversation, not the clock.
    reply_wav: Path | None = None
    reply_dtmf: str | None = None
    reply_after_s: float = 0.5
    # "cue": the reply follows the cue above; "asked": only ``LiveCall.reply()`` sends it (a driver
    # that watches the gateway knows better than the audio when the question is asked).
    reply_when: Literal["cue", "asked"] = "cue"
    codecs: tuple[str, ...] | None = None  # offer only these, e.g. ("PCMA/8000",)
    # Media encryption offered (SDES-SRTP, also over UDP): "off" offers RTP/AVP only, "optional"
    # RTP/AVP with crypto lines, "mandatory" RTP/SAVP. Over TLS, dial "sip:…;transport=tls"
    # with a SipCaller(tls=True).
    srtp: Literal["off", "optional", "mandatory"] = "off"

    def __post_init__(self) -> None:
        for _, digits, method in self.dtmf:
            if method not in ("rfc4733", "sip_info"):
                raise ValueError(f"unknown DTMF method {method!r} (use 'rfc4733' or 'sip_info')")
            if not digits:
                raise ValueError("a DTMF step needs at least one digit")
        if self.max_duration_s <= 0:
            raise ValueError("max_duration_s must be positive")


@dataclass
class CallResult:
    """What happened. Wall-clock times are epoch seconds (``time.time()``)."""

    sip_call_id: str = ""
    status_code: int = 0  # final response to the INVITE (0: none, e.g. unreachable)
    connected: bool = False
    ended_by: Literal["remote", "local", "timeout", "rejected"] = "rejected"
    reason: str = ""
    duration_s: float = 0.0  # from the 200 OK to the end
    codec: str | None = None  # negotiated, e.g. "PCMU/8000"
    speech_started_at: float | None = None
    speech_ended_at: float | None = None
    transfer_target: str | None = None  # the REFER's full Refer-To value
    transfer_headers: dict[str, str] = field(default_factory=dict)  # the REFER's X-* headers
    transfer_status: int | None = None  # final status of the followed transfer's INVITE
    received_audio_s: float = 0.0  # audible seconds the far end sent
    srtp: str | None = None  # the SRTP crypto suite of the audio, e.g. AES_CM_128_HMAC_SHA1_80; None: plain RTP


def _rms(pcm: bytes) -> float:
    samples = array.array("h", pcm)
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


@dataclass(eq=False)
class _Attempt:
    """One ``call()``: its result, and how many of its legs are still up."""

    script: CallScript
    wav: Path | None
    reply_wav: Path | None
    result: CallResult = field(default_factory=CallResult)
    done: threading.Event = field(default_factory=threading.Event)
    live_legs: int = 0


class _Leg(pj.Call):
    """A call leg: the one ``call()`` placed, or the one a followed REFER created.

    Runs on the SIP thread, except the media-thread hooks (frames, player
    EOF), which only count, stamp or queue. Only ``SipCaller._legs`` owns it,
    until its DISCONNECTED callback (see :func:`sip.runtime.weakly`).
    """

    def __init__(
        self,
        sip: SipThread,
        account: pj.Account,
        attempt: _Attempt,
        on_ended: Callable[[_Leg], None],
        on_transfer: Callable[[_Leg, pj.OnCallTransferRequestParam], None],
        transferred: bool = False,
    ) -> None:
        super().__init__(account)
        self._sip = sip
        self.attempt = attempt
        self.transferred = transferred
        self._on_ended = on_ended
        self._on_transfer = on_transfer
        self.ended = False
        self._audio: pj.AudioMedia | None = None
        self._sink: pj.AudioMedia | None = None  # the far end's audio (SipThread.taps)
        self._players: list[Player] = []
        self._confirmed_at: float | None = None
        self._hangup_cause: Literal["local", "timeout"] | None = None
        self._audible = _Counter()
        self._reply_cue = _ReplyCue()

    # -- driving the call ------------------------------------------------------

    def end(self, cause: Literal["local", "timeout"]) -> None:
        if self.ended or self._hangup_cause is not None:
            return
        self._hangup_cause = cause
        try:
            self.hangup(call_op())
        except pj.Error as exc:
            log.debug("hangup: %s", describe(exc))

    def detach_media(self) -> tuple[object, ...]:
        """Stop speaking and hand over the media objects for ``SipThread.retire``."""
        self._stop_speaking()
        if self._sink is not None:
            self._sip.taps.close(self._sink)
        objects = (self._sink, *self._players)
        self._sink, self._audio, self._players = None, None, []
        return objects

    def _speak(self) -> None:
        wav = self.attempt.wav
        if self.ended or self._audio is None or wav is None:
            return
        player = Player(
            wav, on_eof=functools.partial(_speech_ended, self.attempt.result, weakly(self._queue_stop), self._reply_cue)
        )
        self._players.append(player)
        self.attempt.result.speech_started_at = time.time()
        player.startTransmit(self._audio)

    def _queue_stop(self) -> None:
        try:
            self._sip.submit(weakly(self._stop_speaking))
        except SipNotRunningError:
            pass  # closing: detach_media() stops the player

    def _stop_speaking(self) -> None:
        if self._audio is None:
            return
        for player in self._players:
            try:
                player.stopTransmit(self._audio)
            except pj.Error:
                pass  # not transmitting any more

    def reply(self) -> None:
        """The far end asked something (see ``CallScript.reply_wav``): answer it."""
        script = self.attempt.script
        if self.ended or self._audio is None:
            return
        if self.attempt.reply_wav is not None:
            player = Player(self.attempt.reply_wav, on_eof=lambda: None)
            self._players.append(player)
            player.startTransmit(self._audio)
        if script.reply_dtmf:
            self._send_dtmf(script.reply_dtmf, "rfc4733")

    def _send_dtmf(self, digits: str, method: DtmfMethod) -> None:
        if self.ended:
            return
        if method == "rfc4733":
            self.dialDtmf(digits)
        else:
            prm = pj.CallSendDtmfParam()
            prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO
            prm.digits = digits
            prm.duration = 160  # ms, the usual key press
            self.sendDtmf(prm)

    def _schedule(self) -> None:
        script = self.attempt.script
        if (script.reply_wav is not None or script.reply_dtmf) and script.reply_when == "cue":
            # The cue fires from a frame callback (maybe the media thread): hop to the SIP thread, then wait there.
            sip, reply, delay = self._sip, weakly(self.reply), script.reply_after_s
            self._reply_cue.fire = lambda: sip.submit(lambda: sip.call_later(delay, reply))
        if self.attempt.wav is not None:
            self._sip.call_later(script.speak_after_s, weakly(self._speak))
        send = weakly(self._send_dtmf)
        for at_s, digits, method in script.dtmf:
            self._sip.call_later(at_s, functools.partial(send, digits, method))
        if script.hangup_after_s is not None:
            self._sip.call_later(script.hangup_after_s, functools.partial(weakly(self.end), "local"))

    # -- pjsua2 callbacks ------------------------------------------------------

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and self._confirmed_at is None:
            self._confirmed_at = time.monotonic()
            if self.transferred:
                self.attempt.result.transfer_status = info.lastStatusCode or 200
                return
            result = self.attempt.result
            result.sip_call_id = info.callIdString
            result.connected = True
            result.status_code = info.lastStatusCode or 200
            self._schedule()
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED and not self.ended:
            self.ended = True
            self._record_end(info)
            self._on_ended(self)  # drops the last reference: nothing may follow

    def _record_end(self, info: pj.CallInfo) -> None:
        result = self.attempt.result
        if self.transferred:
            if self._confirmed_at is None:
                result.transfer_status = info.lastStatusCode
            return
        result.sip_call_id = info.callIdString
        if not result.connected:
            result.status_code = info.lastStatusCode
        result.ended_by = self._hangup_cause or ("remote" if result.connected else "rejected")
        result.reason = info.lastReason
        if self._confirmed_at is not None:
            result.duration_s = time.monotonic() - self._confirmed_at
        result.received_audio_s = self._audible.value * FRAME_MS / 1000

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        info = self.getInfo()  # keep it: .media is a view into this object
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self._audio = self.getAudioMedia(media.index)
                if self._sink is None:
                    self._sink = self._sip.taps.open(
                        "caller-rx", functools.partial(_on_far_end_frame, self._audible, self._reply_cue))
                self._audio.startTransmit(self._sink)
                if not self.transferred:
                    stream = self.getStreamInfo(media.index)
                    self.attempt.result.codec = f"{stream.codecName}/{stream.codecClockRate}"
                    self.attempt.result.srtp = srtp_suite(self)
                return

    def onCallTsxState(self, prm: pj.OnCallTsxStateParam) -> None:
        # The REFER's own headers are only visible here, before pjsua acts on it.
        event = prm.e
        if event.type != pj.PJSIP_EVENT_TSX_STATE or event.body.tsxState.type != pj.PJSIP_EVENT_RX_MSG:
            return
        message = event.body.tsxState.src.rdata.wholeMsg
        if not message.startswith("REFER "):
            return
        result = self.attempt.result
        result.transfer_headers = {k: v for k, v in app_headers(message).items() if k.lower().startswith("x-")}
        result.transfer_target = next((v for k, v in parse_headers(message) if k == "Refer-To"), None)

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        if self.attempt.result.transfer_target is None:
            self.attempt.result.transfer_target = prm.dstUri
        self._on_transfer(self, prm)


@dataclass
class _Counter:
    value: int = 0


@dataclass
class _ReplyCue:
    """Watches the far end's audio for its next turn: armed when our speech ends, it needs
    a pause first (so a prompt still playing is not taken for a question), then an onset."""

    fire: Callable[[], None] | None = None
    armed: bool = False
    quiet_frames: int = 0
    loud_frames: int = 0

    QUIET_FRAMES = 15  # 300 ms of silence
    ONSET_FRAMES = 10  # 200 ms of speech

    def frame(self, audible: bool) -> None:
        if not self.armed or self.fire is None:
            return
        if not audible:
            self.quiet_frames, self.loud_frames = self.quiet_frames + 1, 0
        elif self.quiet_frames >= self.QUIET_FRAMES:
            self.loud_frames += 1
            if self.loud_frames >= self.ONSET_FRAMES:
                fire, self.fire = self.fire, None  # once per call
                fire()


def _on_far_end_frame(counter: _Counter, cue: _ReplyCue, frame: AudioFrame) -> None:
    # The tap drain (or the media thread): no reference to the leg, only to its counter and cue.
    audible = _rms(frame.pcm) > _AUDIBLE_RMS
    if audible:
        counter.value += 1
    cue.frame(audible)


def _speech_ended(result: CallResult, stop: Callable[[], None], cue: _ReplyCue) -> None:
    # Media thread: stamp the time now, stop the player from the SIP thread.
    if result.speech_ended_at is None:
        result.speech_ended_at = time.time()
        cue.armed = True
        stop()


class LiveCall:
    """A call placed with :meth:`SipCaller.place`, driven while it runs; thread-safe."""

    def __init__(self, caller: SipCaller, attempt: _Attempt) -> None:
        self._caller = caller
        self._attempt = attempt

    @property
    def result(self) -> CallResult:
        """What happened so far (complete once ``wait`` returns)."""
        return self._attempt.result

    def reply(self) -> None:
        """Say the script's ``reply_wav`` and/or key its ``reply_dtmf`` now."""
        self._caller._on_legs(self._attempt, lambda leg: leg.reply())

    def hang_up(self) -> None:
        self._caller._on_legs(self._attempt, lambda leg: leg.end("local"))

    def wait(self, timeout: float | None = None) -> CallResult:
        if not self._attempt.done.wait(self._attempt.script.max_duration_s + 10.0 if timeout is None else timeout):
            log.error("a call did not end 10 s after its max duration")
            self._attempt.result.ended_by = "timeout"
        return self._attempt.result


class SipCaller:
    """Places scripted calls; a context manager owning the process's pjsua2 Endpoint."""

    def __init__(self, bind_host: str = "127.0.0.1", log_level: int = 0, max_calls: int = 32,
                 tls: bool = False, tls_ca_file: Path | None = None, tls_cert_file: Path | None = None,
                 tls_key_file: Path | None = None) -> None:
        """``tls`` adds a SIP-over-TLS client transport (``sip:…;transport=tls`` URIs); the
        server's certificate is verified only against ``tls_ca_file``, when given, and
        ``tls_cert_file``/``tls_key_file`` are presented to servers that ask (mutual TLS)."""
        self.bind_host = bind_host
        self._log_level = log_level
        self._max_calls = max_calls
        self._tls = tls or tls_ca_file is not None or tls_cert_file is not None
        self._tls_files = (tls_cert_file, tls_key_file, tls_ca_file)
        self._sip = SipThread("puente-sip-caller", self)
        self._accounts: dict[str, pj.Account] = {}
        self._legs: set[_Leg] = set()  # the only owner of each live leg; SIP thread only
        self._log_writer: pj.LogWriter | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="puente-caller-")
        self._wavs = WavCache(Path(self._tmp.name))
        self._port = 0
        self._codecs: tuple[str, ...] = ()
        self._pacing = threading.Lock()
        self._last_placed = 0.0

    def __enter__(self) -> SipCaller:
        try:
            self._sip.start()
        except SipStartError:
            self._tmp.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float = 3.0) -> None:
        """Hang up what is still up and destroy the library."""
        self._sip.stop(timeout)
        self._tmp.cleanup()

    @property
    def available_codecs(self) -> tuple[str, ...]:
        """Every codec id this pjsua2 build has (known once started)."""
        return self._codecs

    def call(self, uri: str, script: CallScript | None = None) -> CallResult:
        """Call ``uri`` and play ``script``; blocks until every leg ended.

        Raises ValueError when none of ``script.codecs`` exists in this build.
        """
        return self.place(uri, script).wait()

    def place(self, uri: str, script: CallScript | None = None) -> LiveCall:
        """Call ``uri`` and play ``script``; returns at once with a handle to drive and wait on the call."""
        script = script or CallScript()
        # sox, if the WAV needs converting, runs here rather than on the SIP thread.
        attempt = _Attempt(
            script,
            self._wavs.prepare(script.wav) if script.wav else None,
            self._wavs.prepare(script.reply_wav) if script.reply_wav else None,
        )
        with self._pacing:
            time.sleep(max(0.0, self._last_placed + _MIN_CALL_SPACING_S - time.monotonic()))
            self._last_placed = time.monotonic()
        self._sip.submit(lambda: self._place(uri, attempt)).result(10.0)
        return LiveCall(self, attempt)

    def _on_legs(self, attempt: _Attempt, action: Callable[[_Leg], None]) -> None:
        """Run ``action`` on the SIP thread for the attempt's live legs."""
        def run() -> None:
            for leg in self._legs_of(attempt):
                action(leg)

        self._sip.submit(run)

    def _legs_of(self, attempt: _Attempt) -> list[_Leg]:
        return [leg for leg in self._legs if leg.attempt is attempt]

    # -- SIP thread --------------------------------------------------------------

    def _place(self, uri: str, attempt: _Attempt) -> None:
        script = attempt.script
        # Priorities are endpoint-wide, but they only matter while makeCall
        # builds the offer, on this same thread: concurrent calls cannot mix.
        apply_codec_priorities(self._sip.endpoint, script.codecs or _DEFAULT_CODECS)
        leg = self._new_leg(self._account_for(script), attempt)
        try:
            leg.makeCall(uri, call_op(headers=script.headers))
        except pj.Error as exc:
            self._legs.discard(leg)
            attempt.result.reason = describe(exc)
            attempt.done.set()
            return
        self._sip.call_later(script.max_duration_s, lambda: self._end_attempt(attempt, "timeout"))

    def _new_leg(self, account: pj.Account, attempt: _Attempt, transferred: bool = False) -> _Leg:
        leg = _Leg(self._sip, account, attempt, self._leg_ended, self._transfer_requested, transferred)
        self._legs.add(leg)
        attempt.live_legs += 1
        return leg

    def _transfer_requested(self, leg: _Leg, prm: pj.OnCallTransferRequestParam) -> None:
        if not leg.attempt.script.follow_transfer:
            prm.statusCode = 603
            return
        prm.newCall = self._new_leg(self._account_for(leg.attempt.script), leg.attempt, transferred=True)

    def _leg_ended(self, leg: _Leg) -> None:
        # Inside the leg's DISCONNECTED callback: after this, nothing owns it.
        self._legs.discard(leg)
        self._sip.retire(*leg.detach_media())
        leg.attempt.live_legs -= 1
        if leg.attempt.live_legs == 0:
            leg.attempt.done.set()

    def _end_attempt(self, attempt: _Attempt, cause: Literal["local", "timeout"]) -> None:
        for leg in self._legs_of(attempt):
            leg.end(cause)

    def _account_for(self, script: CallScript) -> pj.Account:
        uri = script.from_uri or f"sip:caller@{self.bind_host}:{self._port}"
        key = f"{uri} srtp={script.srtp}"
        if key not in self._accounts:
            cfg = pj.AccountConfig()
            cfg.idUri = uri
            media = cfg.mediaConfig.transportConfig
            media.port = 0  # any free port: several callers and the gateway share the host
            media.boundAddress = self.bind_host
            media.publicAddress = self.bind_host
            # The far end decides whether SDES over a plain hop is acceptable; the caller just offers.
            apply_srtp(cfg.mediaConfig, script.srtp, require_tls=False)
            account = pj.Account()
            account.create(cfg)
            self._accounts[key] = account
        return self._accounts[key]

    # -- StackOwner ----------------------------------------------------------------

    def setup(self, ep: pj.Endpoint) -> None:
        cfg, self._log_writer = base_config(max_calls=self._max_calls, user_agent="Puente-Caller",
                                            log_level=self._log_level, media_quality=SipConfig.media_quality)
        ep.libInit(cfg)
        ep.audDevManager().setNullDev()
        self._port = self._listen_udp_and_tcp(ep)
        if self._tls:
            tcfg = self._transport_config(0)  # a client transport: any port
            tcfg.tlsConfig = tls_config(*self._tls_files, verify_server=self._tls_files[2] is not None)
            try:
                ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tcfg)
            except pj.Error as exc:
                raise SipStartError(f"no SIP over TLS in this pjsua2 build: {describe(exc)}") from None
        ep.libStart()
        self._codecs = tuple(available_codecs(ep))

    def _listen_udp_and_tcp(self, ep: pj.Endpoint) -> int:
        """UDP on any free port, then TCP on the same number; another process may hold that number
        for TCP (several callers and gateways share the host), so a clash picks another port."""
        for _ in range(_PORT_ATTEMPTS):
            udp = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, self._transport_config(0))
            port = int(ep.transportGetInfo(udp).localName.rsplit(":", 1)[1])
            try:
                ep.transportCreate(pj.PJSIP_TRANSPORT_TCP, self._transport_config(port))
            except pj.Error:
                ep.transportClose(udp)
                continue
            return port
        raise SipStartError(f"no port free for both UDP and TCP on {self.bind_host} after {_PORT_ATTEMPTS} tries")

    def _transport_config(self, port: int) -> pj.TransportConfig:
        tcfg = pj.TransportConfig()
        tcfg.port = port
        tcfg.boundAddress = self.bind_host
        tcfg.publicAddress = self.bind_host
        return tcfg

    def begin_shutdown(self) -> None:
        for leg in list(self._legs):
            leg.end("local")

    def shutdown_settled(self) -> bool:
        return not self._legs

    def release(self) -> None:
        for leg in self._legs:
            leg.detach_media()
            leg.attempt.done.set()
        self._legs.clear()
        self._accounts.clear()
