"""The one thread that owns pjsua2.

pjsua2 is not thread-safe from Python's point of view: every call into it must
come from a thread pjlib knows, and callbacks must not race with commands. So
the library runs with ``threadCnt = 0`` and this module's thread is the only
one that polls it (``libHandleEvents``), runs queued commands and timers, and
finally destroys it. Public methods of endpoints only enqueue work here.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import heapq
import itertools
import logging
import os
import queue
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Protocol, TypeVar

import pjsua2 as pj

from sip.errors import SipNotRunningError, SipStartError
from sip.media import AudioTaps

log = logging.getLogger("puente.sip")

T = TypeVar("T")

# Media objects of an ended call (sink port, players) are dropped this long
# after the end, once the media clock can no longer be inside them.
RETIRE_AFTER_S = 2.0

# pjsua2 aborts the whole process (an uncaught C++ exception) when a second
# Endpoint is constructed, so the claim on "the" Endpoint is process-wide.
_endpoint_claim = threading.Lock()

_PJ_TO_LOGGING = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO}


class _LogWriter(pj.LogWriter):
    """Routes pjsua's log into ``logging`` (it may be called from any pj thread)."""

    def write(self, entry: pj.LogEntry) -> None:
        log.log(_PJ_TO_LOGGING.get(entry.level, logging.DEBUG), "pjsua: %s", entry.msg.rstrip())


def describe(exc: BaseException) -> str:
    """A one-line reason for a pjsua2 error (its ``reason`` is the readable part)."""
    if isinstance(exc, pj.Error):
        return f"{exc.reason} (status {exc.status}, in {exc.title})"
    return str(exc) or type(exc).__name__


def base_config(*, max_calls: int, user_agent: str, log_level: int, media_quality: int) -> tuple[pj.EpConfig, _LogWriter]:
    """Endpoint settings shared by the gateway endpoint and the test caller.

    The writer is returned so the owner keeps it alive as long as the library.
    """
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0  # SIP is polled by SipThread only
    cfg.uaConfig.mainThreadOnly = False
    cfg.uaConfig.maxCalls = max_calls
    cfg.uaConfig.userAgent = user_agent
    writer = _LogWriter()
    cfg.logConfig.writer = writer
    cfg.logConfig.level = log_level
    cfg.logConfig.consoleLevel = log_level
    cfg.logConfig.msgLogging = log_level >= 4
    # The bridge runs at our frame rate so the caller's audio needs one resample at most.
    cfg.medConfig.clockRate = 16000
    cfg.medConfig.sndClockRate = 16000
    cfg.medConfig.channelCount = 1
    cfg.medConfig.audioFramePtime = 20
    cfg.medConfig.noVad = True  # keep RTP (and thus frames) flowing through silence
    cfg.medConfig.ecTailLen = 0  # no echo canceller: there is no speaker here
    cfg.medConfig.quality = media_quality
    # Our build's policy (scripts/pjsua2/jitter.hpp): jitter buffers never thin the caller's audio to
    # cut latency. The PyPI wheel lacks it and keeps pjsua's progressive discard.
    if hasattr(pj, "keepEveryFrame"):
        pj.keepEveryFrame(cfg.medConfig)
    return cfg, writer


def _pjlib() -> ctypes.CDLL | None:
    """The C library inside the pjsua2 extension (pjproject is linked into it), for the few pjlib/
    pjsip settings pjsua2 does not wrap; None where it cannot be opened."""
    try:
        return ctypes.CDLL(pj._pjsua2.__file__)
    except (AttributeError, OSError):
        return None


def ioqueue_name() -> str:
    """pjlib's ioqueue: "epoll…" or "select" (our build vs the PyPI wheel); "" if unknown."""
    lib = _pjlib()
    fn = getattr(lib, "pj_ioqueue_name", None)
    if fn is None:
        return ""
    fn.restype = ctypes.c_char_p
    return (fn() or b"").decode(errors="replace")


def set_transaction_timeout(timeout_s: float) -> bool:
    """Set pjsip's transaction timeout (timer H: a 2xx or error answer never ACKed; also timers B/F,
    our own requests unanswered, and D), default 64*T1 = 32 s, process-wide. Call after libInit.
    False where pjsip_tsx_set_timers is not reachable (the caller should log it)."""
    fn = getattr(_pjlib(), "pjsip_tsx_set_timers", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_uint] * 4
    fn.restype = None
    fn(0, 0, 0, max(1, round(timeout_s * 1000)))  # 0 keeps T1, T2, T4 as they are
    return True


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """pjlib prints its start-up banner with C stdio before any log setting applies; keep it
    off stdout, which belongs to the program (``puente call`` prints JSON there)."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        libc.fflush(None)  # C stdio buffers: write the banner while fd 1 is still /dev/null
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def weakly(method: Callable[..., object]) -> Callable[..., None]:
    """A callback that calls ``method`` only while its object is alive.

    Timers and media callbacks must never own a ``pj.Call``: pjsua2's
    ``~Call`` hangs up whatever call now holds its old slot id, so a Call
    wrapper has to die inside its own DISCONNECTED callback, not later.
    """
    ref = weakref.WeakMethod(method)  # type: ignore[arg-type]

    def call(*args: object) -> None:
        target = ref()
        if target is not None:
            target(*args)

    return call


class StackOwner(Protocol):
    """What a :class:`SipThread` needs from the object that uses the library.

    All four run on the SIP thread.
    """

    def setup(self, ep: pj.Endpoint) -> None:
        """libInit, transports, accounts, libStart; raise SipStartError to abort start()."""

    def begin_shutdown(self) -> None:
        """Start ending everything (hang up calls)."""

    def shutdown_settled(self) -> bool:
        """True once nothing is left to wait for (all calls disconnected)."""

    def release(self) -> None:
        """Drop every pjsua2 object (calls, ports, players, accounts) before libDestroy."""


class SipThread:
    """Creates, polls and destroys the process's pjsua2 Endpoint on a dedicated thread."""

    def __init__(self, name: str, owner: StackOwner, poll_ms: int = 10) -> None:
        self._name = name
        self._owner = owner
        self._poll_ms = poll_ms
        self._commands: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._retired: deque[tuple[float, tuple[object, ...]]] = deque()
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._stop_requested = threading.Event()
        self._shutdown_timeout = 0.0
        self._ep: pj.Endpoint | None = None
        self.taps = AudioTaps()  # every call's received audio; drained after each poll

    @property
    def endpoint(self) -> pj.Endpoint:
        """The live Endpoint; only for code already running on this thread."""
        assert self._ep is not None and self.on_thread(), "pjsua2 used off the SIP thread"
        return self._ep

    def on_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def start(self, timeout: float = 10.0) -> None:
        """Create the library and run the owner's ``setup(ep)`` on the thread.

        Blocks until setup finished; its exception is re-raised here as
        :class:`SipStartError` so the caller of ``start()`` sees why.
        """
        if self._thread is not None:
            raise SipStartError(f"{self._name} was already started")
        if not _endpoint_claim.acquire(blocking=False):
            raise SipStartError("a pjsua2 Endpoint already runs in this process (only one is possible)")
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=self._name, daemon=True)
        self._thread.start()
        try:
            ready.result(timeout)
        except SipStartError:
            self._thread.join(timeout)
            raise
        except TimeoutError:
            self._stop_requested.set()
            raise SipStartError(f"{self._name}: pjsua2 did not start within {timeout:.0f} s") from None

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the SIP thread; thread-safe. The future carries its result or exception."""
        if not self._accepting:
            raise SipNotRunningError(f"{self._name} is not running")
        fut: Future[T] = Future()
        self._commands.put((fn, fut))  # type: ignore[arg-type]
        return fut

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the SIP thread after ``delay_s``; call only from the SIP thread."""
        assert self.on_thread(), "call_later is for code already on the SIP thread"
        heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._timer_seq), fn))

    def retire(self, *objects: object) -> None:
        """Keep pjsua2 media objects for RETIRE_AFTER_S more, then drop them here."""
        assert self.on_thread(), "retire is for code already on the SIP thread"
        self._retired.append((time.monotonic() + RETIRE_AFTER_S, objects))

    def stop(self, timeout: float) -> None:
        """Shut down: the owner's ``begin_shutdown()``, poll until ``shutdown_settled()``
        or ``timeout``, ``release()``, then destroy the library. Blocks until done."""
        if self._thread is None or not self._thread.is_alive():
            return
        if self.on_thread():
            raise RuntimeError("stop() called from the SIP thread itself (e.g. inside a handler)")
        self._shutdown_timeout = timeout
        self._accepting = False
        self._stop_requested.set()
        self._thread.join(timeout + 5.0)
        if self._thread.is_alive():
            log.error("%s: SIP thread did not finish shutting down", self._name)

    # -- the thread ---------------------------------------------------------

    def _run(self, ready: Future[None]) -> None:
        try:
            with _stdout_silenced():
                ep = pj.Endpoint()
                ep.libCreate()
            self._ep = ep
        except Exception as exc:
            _endpoint_claim.release()
            ready.set_exception(SipStartError(f"cannot create the pjsua2 library: {describe(exc)}"))
            return
        try:
            self._owner.setup(ep)
        except Exception as exc:
            self._guarded(self._owner.release)
            self._destroy()
            ready.set_exception(exc if isinstance(exc, SipStartError) else SipStartError(describe(exc)))
            return
        self._accepting = True
        ready.set_result(None)
        while not self._stop_requested.is_set():
            self._pump()
        self._accepting = False
        self._guarded(self._owner.begin_shutdown)
        deadline = time.monotonic() + self._shutdown_timeout
        while time.monotonic() < deadline and not self._owner.shutdown_settled():
            self._pump()
        self._pump()  # run what the last events queued (e.g. end-of-call bookkeeping)
        self._timers.clear()
        self._retired.clear()
        self._guarded(self._owner.release)
        self.taps.clear()
        self._destroy()
        while not self._commands.empty():  # raced with stop(): tell their waiters
            self._commands.get_nowait()[1].set_exception(SipNotRunningError(f"{self._name} stopped"))

    def _pump(self) -> None:
        assert self._ep is not None
        self._ep.libHandleEvents(self._poll_ms)
        self.taps.drain()
        while True:
            try:
                fn, fut = self._commands.get_nowait()
            except queue.Empty:
                break
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except Exception as exc:  # surfaced through the future; logged if nobody waits
                    fut.set_exception(exc)
                    log.debug("%s: command %r failed: %s", self._name, fn, describe(exc))
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            self._guarded(heapq.heappop(self._timers)[2])
        while self._retired and self._retired[0][0] <= now:
            self._retired.popleft()

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("%s: error on the SIP thread", self._name)

    def _destroy(self) -> None:
        # A pjsua2 object freed after libDestroy asserts inside pjsua, so collect
        # any that only a reference cycle still holds while the library is alive.
        gc.collect()
        try:
            assert self._ep is not None
            self._ep.libDestroy()
        except Exception as exc:
            log.error("%s: libDestroy failed: %s", self._name, describe(exc))
        finally:
            self._ep = None
            _endpoint_claim.release()
