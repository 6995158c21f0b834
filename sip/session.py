"""Calls on the SIP thread, either way: media, prompts, bridging, DTMF, transfer, their end."""
from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable
from pathlib import Path

import pjsua2 as pj

from models.audio import AudioFrame
from sip.errors import SipNotRunningError
from sip.events import (
    CallEnded,
    CallEvent,
    CallHandler,
    CallMediaReady,
    DialProgress,
    DtmfReceived,
    PlaybackFinished,
    TransferUpdate,
)
from sip.media import Player
from sip.runtime import SipThread, describe, weakly

log = logging.getLogger("puente.sip")

# The status a leg reports when its INVITE could not even be sent (bad URI, no call slot).
DIAL_FAILED = 500


def call_op(status_code: int | None = None, headers: dict[str, str] | None = None) -> pj.CallOpParam:
    prm = pj.CallOpParam(True)
    if status_code is not None:
        prm.statusCode = status_code
    for name, value in (headers or {}).items():
        hdr = pj.SipHeader()
        hdr.hName, hdr.hValue = name, value
        prm.txOption.headers.append(hdr)
    return prm


class CallLeg(pj.Call):
    """One call of the gateway, inbound or outbound: its audio, prompts, bridge and end.

    Runs on the SIP thread, except what pjsua calls from the media thread
    (RFC 4733 digits, player EOF): those only queue work. Only the endpoint's
    call table owns this object, and it lets go inside the DISCONNECTED
    callback (see :func:`sip.runtime.weakly`); the media objects outlive it
    briefly through ``SipThread.retire``. Bridged peers are held weakly, so
    a bridge never keeps an ended call alive.
    """

    def __init__(
        self,
        account: pj.Account,
        pj_call_id: int,
        call_id: str,
        handler: CallHandler,
        sip: SipThread,
        on_ended: Callable[[CallLeg], None],
    ) -> None:
        super().__init__(account, pj_call_id)
        self.call_id = call_id
        self._handler = handler
        self._sip = sip
        self._on_ended = on_ended
        self.notify = True  # False once the handler refused the call
        self.ended = False
        self._local_hangup = False
        self._ready = False  # CallMediaReady sent
        self._audio: pj.AudioMedia | None = None
        self._players: list[Player] = []  # every player of this call, until it ends
        self._playing: tuple[str, Player] | None = None
        self._pending_play: tuple[str, Path] | None = None
        self._peers: dict[str, weakref.ref[CallLeg]] = {}  # calls whose audio this one exchanges

    # -- commands (SIP thread) ------------------------------------------------

    def play(self, playback_id: str, wav: Path) -> None:
        if self._audio is None:  # media not up yet: play as soon as it is
            self._interrupt_pending()
            self._pending_play = (playback_id, wav)
            return
        self.stop_playback()
        player = Player(wav, on_eof=functools.partial(weakly(self._on_player_eof), playback_id))
        self._players.append(player)
        self._playing = (playback_id, player)
        player.startTransmit(self._audio)

    def stop_playback(self, interrupted: bool = True) -> None:
        self._interrupt_pending()
        if self._playing is None:
            return
        playback_id, player = self._playing
        self._playing = None
        if self._audio is not None:
            try:
                player.stopTransmit(self._audio)
            except pj.Error as exc:  # the call's media may already be gone
                log.debug("stopTransmit: %s", describe(exc))
        self._emit(PlaybackFinished(self.call_id, playback_id, interrupted=interrupted))

    def listen(self, on: bool) -> None:
        """Only inbound calls deliver frames; see :class:`InboundCall`."""

    def hangup_local(self, status_code: int | None = None) -> None:
        if self.ended or self._local_hangup:
            return
        self._local_hangup = True
        # pjsua frees the call's bridge slot inside hangup(), and the slot may be reused before
        # DISCONNECTED: disconnect the peers while the slot is still ours.
        self._unbridge(disconnect=True)
        # Inbound before the 200 OK: the final response (pjsua defaults to 603); outbound before
        # the answer: a CANCEL (the leg ends with 487); after either: a BYE.
        self.hangup(call_op(status_code))

    def transfer(self, refer_to: str, headers: dict[str, str]) -> None:
        self.xfer(refer_to, call_op(headers=headers))

    def bridge(self, other: CallLeg) -> None:
        """Stop both calls' prompts and let them hear each other, now or once both have audio."""
        self.stop_playback()
        other.stop_playback()
        self._peers[other.call_id] = weakref.ref(other)
        other._peers[self.call_id] = weakref.ref(self)
        self._link(other)

    def detach_media(self) -> tuple[object, ...]:
        """Disconnect prompts and peers; hand over the media objects for ``SipThread.retire``."""
        self._unbridge(disconnect=False)
        if self._audio is not None:
            for player in self._players:
                try:
                    player.stopTransmit(self._audio)
                except pj.Error:
                    pass  # was not transmitting
        objects = tuple(self._players)
        self._audio, self._playing = None, None
        self._players = []
        return objects

    # -- pjsua2 callbacks -----------------------------------------------------

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        if info.state != pj.PJSIP_INV_STATE_DISCONNECTED or self.ended:
            return
        # pjsua already removed the call's bridge port (and so its connections) before this callback.
        self._unbridge(disconnect=False)
        self._end(info.lastReason, info.lastStatusCode)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        info = self.getInfo()  # keep it: .media is a view into this object
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self._connect_audio(self.getAudioMedia(media.index))
                return

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        # RFC 4733 digits are reported from the media thread: hop to the SIP thread.
        method = "sip_info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"
        self._queue(functools.partial(weakly(self._emit), DtmfReceived(self.call_id, prm.digit, method)))

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        self._emit(TransferUpdate(self.call_id, prm.statusCode, final=bool(prm.finalNotify)))

    # -- for subclasses -------------------------------------------------------

    def _answered(self) -> bool:
        """Whether audio that comes up now is the call's own (not early media)."""
        return True

    def _on_audio(self, audio: pj.AudioMedia) -> None:
        """The call's stream port is (again) ``audio``."""

    def _maybe_ready(self) -> None:
        if not self._ready and self._audio is not None and self._answered():
            self._ready = True
            self._emit(CallMediaReady(self.call_id))

    def _end(self, reason: str, sip_status: int) -> None:
        self.ended = True
        self.stop_playback()
        self._emit(CallEnded(self.call_id, by="local" if self._local_hangup else "remote", reason=reason,
                             sip_status=sip_status))
        self._on_ended(self)  # drops the last reference: nothing may follow

    # -- internals ------------------------------------------------------------

    def _connect_audio(self, audio: pj.AudioMedia) -> None:
        self._audio = audio
        self._on_audio(audio)
        if self._playing is not None:  # a re-INVITE moved the stream: follow it
            self._playing[1].startTransmit(audio)
        for peer in self._live_peers():  # ... and so does the bridge
            self._link(peer)
        self._maybe_ready()
        if self._pending_play is not None:
            playback_id, wav = self._pending_play
            self._pending_play = None
            self.play(playback_id, wav)

    def _link(self, other: CallLeg) -> None:
        if self._audio is None or other._audio is None:
            return  # the one still without audio links up in its _connect_audio
        try:
            self._audio.startTransmit(other._audio)
            other._audio.startTransmit(self._audio)
        except pj.Error as exc:
            log.warning("cannot bridge %s and %s: %s", self.call_id, other.call_id, describe(exc))

    def _unbridge(self, disconnect: bool) -> None:
        for peer in self._live_peers():
            peer._peers.pop(self.call_id, None)
            if disconnect and self._audio is not None and peer._audio is not None:
                for src, dst in ((self._audio, peer._audio), (peer._audio, self._audio)):
                    try:
                        src.stopTransmit(dst)
                    except pj.Error as exc:
                        log.debug("stopTransmit: %s", describe(exc))
        self._peers.clear()

    def _live_peers(self) -> list[CallLeg]:
        return [peer for ref in self._peers.values() if (peer := ref()) is not None and not peer.ended]

    def _interrupt_pending(self) -> None:
        if self._pending_play is not None:
            self._emit(PlaybackFinished(self.call_id, self._pending_play[0], interrupted=True))
            self._pending_play = None

    def _on_player_eof(self, playback_id: str) -> None:
        # Media thread; pjmedia forbids stopping a player inside its EOF callback.
        self._queue(functools.partial(weakly(self._finish_playback), playback_id))

    def _finish_playback(self, playback_id: str) -> None:
        if self._playing is not None and self._playing[0] == playback_id:
            self.stop_playback(interrupted=False)

    def _queue(self, fn: Callable[[], None]) -> None:
        try:
            self._sip.submit(fn)
        except SipNotRunningError:
            pass  # shutting down: nobody is listening any more

    def _emit(self, event: CallEvent) -> None:
        if self.notify:
            notify_handler(self._handler, event)


class InboundCall(CallLeg):
    """An answered (or answering) call; the caller's audio goes to the handler as frames."""

    def __init__(
        self,
        account: pj.Account,
        pj_call_id: int,
        call_id: str,
        handler: CallHandler,
        sip: SipThread,
        on_ended: Callable[[CallLeg], None],
    ) -> None:
        super().__init__(account, pj_call_id, call_id, handler, sip, on_ended)
        self._sink: pj.AudioMedia | None = None  # where the caller's audio goes (SipThread.taps)
        self._listening = True  # whether the caller's frames reach the handler

    def answer_with(self, status_code: int) -> None:
        if not self.ended:
            self.answer(call_op(status_code))

    def listen(self, on: bool) -> None:
        if self._sink is not None:
            self._sip.taps.listen(self._sink, on)
        self._listening = on

    def detach_media(self) -> tuple[object, ...]:
        objects = super().detach_media()
        if self._sink is None:
            return objects
        self._sip.taps.close(self._sink)  # its last frames, then no more draining
        sink, self._sink = self._sink, None
        return (sink, *objects)

    def _on_audio(self, audio: pj.AudioMedia) -> None:
        if self._sink is None:
            self._sink = self._sip.taps.open(f"in-{self.call_id[:8]}", functools.partial(_deliver, self._handler, self.call_id))
            self._sip.taps.listen(self._sink, self._listening)
        audio.startTransmit(self._sink)


class OutboundCall(CallLeg):
    """A call the gateway places (an agent leg). Its audio reaches no handler: only a bridged
    call hears it. Provisional responses become DialProgress, the answer CallMediaReady."""

    def __init__(
        self, account: pj.Account, call_id: str, handler: CallHandler, sip: SipThread,
        on_ended: Callable[[CallLeg], None],
    ) -> None:
        super().__init__(account, pj.PJSUA_INVALID_ID, call_id, handler, sip, on_ended)
        self._confirmed = False
        self._progress: set[int] = set()  # provisional codes already reported

    def place(self, target_uri: str, headers: dict[str, str]) -> None:
        """Send the INVITE; if it cannot be sent, end the leg here (CallEnded by local)."""
        try:
            self.makeCall(target_uri, call_op(headers=headers))
        except Exception as exc:  # pj.Error, or a header SWIG refused: the event must still come
            if not self.ended:
                log.warning("cannot call %s: %s", target_uri, describe(exc))
                self._local_hangup = True
                self._end(describe(exc), DIAL_FAILED)

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_EARLY and info.lastStatusCode not in self._progress:
            self._progress.add(info.lastStatusCode)
            self._emit(DialProgress(self.call_id, info.lastStatusCode))
        elif info.state == pj.PJSIP_INV_STATE_CONFIRMED and not self._confirmed:
            self._confirmed = True
            self._maybe_ready()
        super().onCallState(prm)

    def _answered(self) -> bool:
        return self._confirmed  # media up on a 183 is early media: the agent has not answered


def _deliver(handler: CallHandler, call_id: str, frame: AudioFrame) -> None:
    # 50 times a second per call (the SIP thread's tap drain, or the clock thread): keep it small.
    try:
        handler.on_frame(call_id, frame)
    except Exception:
        log.exception("call handler failed on a frame of %s", call_id)


def notify_handler(handler: CallHandler, event: CallEvent) -> None:
    try:
        handler.on_event(event)
    except Exception:
        log.exception("call handler failed on %s", event)
