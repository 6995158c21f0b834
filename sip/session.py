"""One inbound call on the SIP thread: media, prompts, DTMF, transfer, its end."""
from __future__ import annotations

import functools
import logging
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
    DtmfReceived,
    PlaybackFinished,
    TransferUpdate,
)
from sip.media import Player
from sip.runtime import SipThread, describe, weakly

log = logging.getLogger("puente.sip")


def call_op(status_code: int | None = None, headers: dict[str, str] | None = None) -> pj.CallOpParam:
    prm = pj.CallOpParam(True)
    if status_code is not None:
        prm.statusCode = status_code
    for name, value in (headers or {}).items():
        hdr = pj.SipHeader()
        hdr.hName, hdr.hValue = name, value
        prm.txOption.headers.append(hdr)
    return prm


class InboundCall(pj.Call):
    """An answered (or answering) call.

    Runs on the SIP thread, except what pjsua calls from the media thread
    (frames, RFC 4733 digits, player EOF): those only hand a frame over or
    queue work. Only the endpoint's call table owns this object, and it lets
    go inside the DISCONNECTED callback (see :func:`sip.runtime.weakly`); the
    media objects outlive it briefly through ``SipThread.retire``.
    """

    def __init__(
        self,
        account: pj.Account,
        pj_call_id: int,
        call_id: str,
        handler: CallHandler,
        sip: SipThread,
        on_ended: Callable[[InboundCall], None],
    ) -> None:
        super().__init__(account, pj_call_id)
        self.call_id = call_id
        self._handler = handler
        self._sip = sip
        self._on_ended = on_ended
        self.notify = True  # False once the handler refused the call
        self.ended = False
        self._local_hangup = False
        self._sink: pj.AudioMedia | None = None  # where the caller's audio goes (SipThread.taps)
        self._audio: pj.AudioMedia | None = None
        self._players: list[Player] = []  # every player of this call, until it ends
        self._playing: tuple[str, Player] | None = None
        self._pending_play: tuple[str, Path] | None = None
        self._listening = True  # whether the caller's frames reach the handler

    # -- commands (SIP thread) ------------------------------------------------

    def answer_with(self, status_code: int) -> None:
        if not self.ended:
            self.answer(call_op(status_code))

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
        if self._sink is not None:
            self._sip.taps.listen(self._sink, on)
        self._listening = on

    def hangup_local(self, status_code: int | None = None) -> None:
        if self.ended or self._local_hangup:
            return
        self._local_hangup = True
        # Before the 200 OK this is the final response (pjsua defaults to 603); after it, a BYE.
        self.hangup(call_op(status_code))

    def transfer(self, refer_to: str, headers: dict[str, str]) -> None:
        self.xfer(refer_to, call_op(headers=headers))

    def detach_media(self) -> tuple[object, ...]:
        """Disconnect prompts and hand over the media objects for ``SipThread.retire``."""
        if self._audio is not None:
            for player in self._players:
                try:
                    player.stopTransmit(self._audio)
                except pj.Error:
                    pass  # was not transmitting
        if self._sink is not None:
            self._sip.taps.close(self._sink)  # its last frames, then no more draining
        objects = (self._sink, *self._players)
        self._sink, self._audio, self._playing = None, None, None
        self._players = []
        return objects

    # -- pjsua2 callbacks -----------------------------------------------------

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        if info.state != pj.PJSIP_INV_STATE_DISCONNECTED or self.ended:
            return
        self.ended = True
        self.stop_playback()
        self._emit(
            CallEnded(
                self.call_id,
                by="local" if self._local_hangup else "remote",
                reason=info.lastReason,
                sip_status=info.lastStatusCode,
            )
        )
        self._on_ended(self)  # drops the last reference: nothing may follow

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

    # -- internals ------------------------------------------------------------

    def _connect_audio(self, audio: pj.AudioMedia) -> None:
        first = self._sink is None
        self._audio = audio
        if self._sink is None:
            self._sink = self._sip.taps.open(f"in-{self.call_id[:8]}", functools.partial(_deliver, self._handler, self.call_id))
            self._sip.taps.listen(self._sink, self._listening)
        audio.startTransmit(self._sink)
        if self._playing is not None:  # a re-INVITE moved the stream: follow it
            self._playing[1].startTransmit(audio)
        if first:
            self._emit(CallMediaReady(self.call_id))
        if self._pending_play is not None:
            playback_id, wav = self._pending_play
            self._pending_play = None
            self.play(playback_id, wav)

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
