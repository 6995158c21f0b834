"""Builds the WhatsApp channel from settings: client, sender, webhook router, the account's state and (with no
credentials) the sandbox."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from fastapi import APIRouter
from pydantic import SecretStr

from gateway.config import Settings
from gateway.store import Store
from gateway.timing import Clock, SystemClock
from gateway.whatsapp.account import AccountHealth
from gateway.whatsapp.client import CloudApiClient
from gateway.whatsapp.outbox import Alert, OutboxWorker
from gateway.whatsapp.sandbox import Sandbox
from gateway.whatsapp.templates import MessageBuilder, TemplateRegistry
from gateway.whatsapp.webhooks import InboundEvent, create_whatsapp_router

log = logging.getLogger(__name__)

HttpClientFactory = Callable[[], httpx.AsyncClient]


@dataclass
class WhatsAppChannel:
    """Everything the gateway wires: ``router`` and ``sandbox.app`` into FastAPI, ``start``/``stop`` into its lifecycle,
    ``account`` into routing and ``/healthz``."""

    router: APIRouter
    worker: OutboxWorker
    client: CloudApiClient
    sandbox: Sandbox | None
    messages_url: str
    webhook_url: str | None
    account: AccountHealth
    _store: Store = field(repr=False)
    _http: list[httpx.AsyncClient] = field(default_factory=list, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> None:
        """Read the account's state back from the store, then start the sender as a task on the running loop
        (the HTTP server may come up after it: it retries)."""
        self.account.restore(await self._store.whatsapp.account_events())
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.worker.run(), name="whatsapp-outbox")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let the message in hand finish, then close; a send still hanging after ``timeout_s`` is cancelled
        (it stays in doubt in the outbox and is reconciled on the next start)."""
        self.worker.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except asyncio.TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self.sandbox is not None:
            await self.sandbox.aclose()
        for http in self._http:
            await http.aclose()


def local_base(settings: Settings) -> str:
    """This gateway's own HTTP address, as seen from this machine."""
    host = settings.http.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http.port}"


def build_whatsapp(
    settings: Settings,
    store: Store,
    *,
    http_client_factory: HttpClientFactory | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    on_inbound: Callable[[InboundEvent], Awaitable[None]] | None = None,
    on_alert: Callable[[Alert], None] | None = None,
    local_base_url: str | None = None,
) -> WhatsAppChannel:
    """The channel for ``settings.whatsapp``: the real Cloud API with credentials, otherwise the sandbox
    served by this gateway under ``/sandbox`` (``local_base_url`` overrides the address derived from
    ``settings.http``, e.g. when tests bind a free port)."""
    wa = settings.whatsapp
    clock = clock or SystemClock()
    rng = rng or random.Random()
    base = (local_base_url or local_base(settings)).rstrip("/")
    # Loopback traffic to the sandbox must not go through an environment proxy.
    factory = http_client_factory or (lambda: httpx.AsyncClient(trust_env=not wa.sandbox))
    registry = TemplateRegistry(wa.templates)
    account = AccountHealth(wa.template, registry)
    if wa.sandbox:
        # No credentials: a per-process secret and token shared by the sandbox and our side only.
        app_secret = wa.app_secret or SecretStr(secrets.token_hex(32))
        access_token = SecretStr("sandbox-" + secrets.token_hex(16))
        api_base = wa.base_url or base + Sandbox.mount_path
        webhook_url = wa.webhook_url or base + "/webhooks/whatsapp"
    else:
        app_secret, access_token, api_base, webhook_url = wa.app_secret, wa.access_token, wa.base_url, None
    http = factory()
    opened = [http]
    client = CloudApiClient(
        http, base_url=api_base, api_version=wa.api_version, phone_number_id=wa.phone_number_id,
        access_token=access_token, timeout_s=wa.request_timeout_s,
    )
    sandbox = None
    if wa.sandbox:
        sandbox_http = factory()
        opened.append(sandbox_http)
        sandbox = Sandbox(
            registry=registry, phone_number_id=wa.phone_number_id, display_phone_number=wa.display_phone_number,
            business_account_id=wa.business_account_id, app_secret=app_secret, webhook_url=webhook_url,
            http=sandbox_http, clock=clock, rng=rng, access_token=access_token, window_hours=wa.window_hours,
        )
    worker = OutboxWorker(
        store, client, MessageBuilder(registry, wa.intent_labels, wa.reason_templates), wa, clock=clock, rng=rng, on_alert=on_alert
    )
    router = create_whatsapp_router(
        store=store, app_secret=app_secret, verify_token=wa.verify_token, phone_number_id=wa.phone_number_id,
        max_body_bytes=wa.webhook_max_body_bytes, clock=clock, account=account, on_inbound=on_inbound,
    )
    log.info("whatsapp: %s at %s", "sandbox" if wa.sandbox else "Cloud API", client.messages_url)
    return WhatsAppChannel(
        router=router, worker=worker, client=client, sandbox=sandbox, messages_url=client.messages_url,
        webhook_url=webhook_url, account=account, _store=store, _http=opened,
    )
