"""Runs the gateway and its HTTP API in one asyncio loop until SIGINT/SIGTERM."""
from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

import uvicorn

from gateway.config import Settings
from gateway.http.app import create_app
from gateway.service import Gateway
from gateway.whatsapp import local_base


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: it re-raises SIGTERM after its shutdown,
    which would kill the process before the gateway has hung up and recorded its calls."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


async def serve(settings: Settings, *, on_ready: Callable[[Settings], Awaitable[None]] | None = None,
                stop_when_ready: bool = False) -> None:
    """Serve until SIGINT/SIGTERM; ``on_ready`` runs once the API is up (and with ``stop_when_ready``, then stops)."""
    gateway = Gateway(settings)
    report = await gateway.start()
    print(
        f"puente: SIP on {settings.sip.host}:{settings.sip.port} ({'/'.join(settings.sip.transports)}), "
        f"HTTP on http://{settings.http.host}:{settings.http.port}, ASR {report.asr_model}, NLU {report.nlu_version}",
        flush=True,
    )
    if report.interrupted_calls_closed or report.interrupted_waits:
        print(f"puente: the last run left {report.interrupted_calls_closed} call(s) open, {report.interrupted_waits} of them "
              "waiting in a queue: closed as interrupted, recoveries by policy", flush=True)
    if gateway.whatsapp is not None and gateway.whatsapp.sandbox is not None:
        print(f"puente: WhatsApp sandbox (no credentials configured): {local_base(settings)}/sandbox/chat/<number>", flush=True)
    server = _ApiServer(
        uvicorn.Config(create_app(gateway), host=settings.http.host, port=settings.http.port, log_level="warning")
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, setattr, server, "should_exit", True)
    try:
        serving = asyncio.create_task(server.serve())
        if on_ready is not None:
            while not server.started and not serving.done():
                await asyncio.sleep(0.05)
            await on_ready(settings)
            server.should_exit = server.should_exit or stop_when_ready
        await serving
    finally:
        await gateway.stop()
    print("puente: stopped", flush=True)
