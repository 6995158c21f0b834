"""``puente demo``: sample calls in Spanish and English against the running gateway.

Each sample is a real SIP call placed by a separate ``puente call`` process (pjsua2
allows one endpoint per process, and the gateway holds this one).
"""
from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from gateway.config import Settings


@dataclass(frozen=True)
class Sample:
    lang: str
    text: str
    intent: str
    route: str
    from_number: str
    reply: tuple[str, ...] = ()  # how the caller answers the WhatsApp consent question


SAMPLES = (
    Sample("es", "Quiero saber cuándo llega mi paquete", "order_status", "whatsapp", "+525555550123", ("--dtmf", "1")),
    Sample("es", "Necesito una copia de mi factura del mes pasado", "duplicate_document", "whatsapp", "+525555550124", ("--dtmf", "1")),
    Sample("es", "Me robaron la tarjeta y quiero bloquearla", "fraud_or_loss", "voice", "+525555550125"),
    Sample("en", "Hi, I would like to know where my order is", "order_status", "whatsapp", "+14155550123", ("--dtmf", "1")),
    Sample("en", "What time do you open tomorrow?", "opening_hours", "whatsapp", "+14155550124", ("--dtmf", "1")),
    Sample("en", "I want to cancel my internet service", "cancel_service", "voice", "+14155550125"),
)
#: The deflected customer who then continues in the WhatsApp sandbox chat, as a person would.
CHAT = {"number": "+14155550123", "replies": ("Yes, let's continue", "My order number is 54321", "5")}


async def run_demo(settings: Settings) -> None:
    api = f"http://{settings.http.host}:{settings.http.port}"
    print(f"\nPlacing {len(SAMPLES)} sample calls…\n", flush=True)
    rows = []
    async with httpx.AsyncClient(base_url=api, timeout=5.0) as client:
        for sample in SAMPLES:
            record = await _call(settings, sample, api)
            rows.append((sample, record))
            _print_row(sample, record)
            if record.get("route") == "whatsapp":
                await _print_delivery(client, record, api)
        await _chat_as_the_customer(client, CHAT["number"], CHAT["replies"])
    correct = sum(1 for s, r in rows if r.get("route") == s.route and r.get("intent") == s.intent)
    print(f"\n{correct}/{len(rows)} sample calls understood and routed as expected.")
    print(
        f"\nThe gateway stays up. Call it from a softphone (e.g. `baresip`, Linphone, Zoiper) at "
        f"sip:es@{settings.sip.host}:{settings.sip.port} (Spanish), sip:en@… (English) or any other "
        f"extension (Spanish or English). Records: {api}/v1/calls — Ctrl-C to stop.\n",
        flush=True,
    )


async def _call(settings: Settings, sample: Sample, api: str) -> dict:
    uri = f"sip:{sample.lang}@{settings.sip.host}:{settings.sip.port}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "call", uri, "--say", sample.text, "--lang", sample.lang,
        "--api", api, "--from", sample.from_number, *sample.reply,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    try:
        return json.loads(out.decode().strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": err.decode().strip()[-300:] or f"exit {proc.returncode}"}


async def _print_delivery(client: httpx.AsyncClient, record: dict, api: str) -> None:
    """Follow the deflection message until the WhatsApp sandbox reports it delivered."""
    message: dict = {}
    for _ in range(50):
        messages = (await client.get(f"/v1/calls/{record['call_id']}")).json().get("messages", [])
        message = messages[0] if messages else {}
        if message.get("status") in ("delivered", "read", "failed"):
            break
        await asyncio.sleep(0.2)
    number = message.get("to_number", "?")
    print(
        f"      WhatsApp to {number}: {message.get('status', 'not queued')} "
        f"— chat: {api}/sandbox/chat/{quote(number)}",
        flush=True,
    )


async def _chat_as_the_customer(client: httpx.AsyncClient, number: str, replies: tuple[str, ...]) -> None:
    """Answer the deflection message in the sandbox and let the self-service flow run to the end."""
    print(f"\nThe customer {number} continues on WhatsApp (sandbox chat):", flush=True)
    chat = f"/sandbox/customers/{quote(number)}"
    seen = len((await client.get(f"{chat}/messages")).json())
    for text in replies:
        print(f"      customer: {text}", flush=True)
        await client.post(f"{chat}/reply", json={"text": text})
        seen = await _print_business_messages(client, chat, seen + 1)
    conversations = (await client.get("/v1/conversations", params={"number": number})).json()
    if conversations:
        latest = conversations[0]
        print(f"      → conversation {latest.get('status')}, resolution {latest.get('resolution')}, CSAT {latest.get('csat')}", flush=True)


async def _print_business_messages(client: httpx.AsyncClient, chat: str, seen: int) -> int:
    """Wait (the outbox spaces messages to one customer) and print the business's new messages."""
    messages: list[dict] = []
    for _ in range(100):  # up to 20 s
        messages = (await client.get(f"{chat}/messages")).json()
        if len(messages) > seen and messages[-1]["direction"] == "out":
            await asyncio.sleep(0.5)  # a turn may send several messages
            messages = (await client.get(f"{chat}/messages")).json()
            break
        await asyncio.sleep(0.2)
    for message in messages[seen:]:
        if message["direction"] == "out":
            options = " | ".join(b.get("title", "") for b in message.get("buttons") or [])
            print(f"      business: {message['text']}" + (f"  [{options}]" if options else ""), flush=True)
    return len(messages)


def _print_row(sample: Sample, record: dict) -> None:
    if "error" in record:
        print(f"  ✗ [{sample.lang}] {sample.text!r}: {record['error']}", flush=True)
        return
    ok = "✓" if record.get("route") == sample.route and record.get("intent") == sample.intent else "✗"
    confidence = record.get("confidence") or 0.0
    print(
        f"  {ok} [{sample.lang}] heard {record.get('transcript')!r}\n"
        f"      → {record.get('intent')} ({confidence:.2f}) → {record.get('route')}, call {record.get('outcome')}",
        flush=True,
    )
