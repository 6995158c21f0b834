"""``puente demo --scenario queue``: twenty callers, two agents, one queue, everything on loopback.

The gateway runs with a voice queue served by two simulated agents (``gateway.dev.agents``);
a crowd of callers (``gateway.dev.crowd``) states reasons that stay in voice, and each behaves as a
caller would: takes the WhatsApp offer by key or by voice, declines it, ignores it, or hangs up.
What happens is printed as it happens, then counted from the gateway's own records, with the
WhatsApp sandbox chats of the callers who were offered or recovered.
"""
from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from gateway.config import Settings
from gateway.dev.crowd import Caller, plan_json

AGENTS = ("ana", "beto")
_TEXTS = {
    "billing": ("es", "Me cobraron dos veces la factura de este mes"),
    "internet": ("es", "Mi internet no funciona desde ayer"),
    "cancel": ("es", "Quiero cancelar mi servicio de internet"),
    "complaint": ("es", "Quiero poner una queja por el mal servicio"),
    "fraud": ("es", "Me robaron la tarjeta y quiero bloquearla"),
    "person": ("es", "Quiero hablar con un asesor"),
    "internet_en": ("en", "My internet is not working since yesterday"),
    "cancel_en": ("en", "I want to cancel my internet service"),
}
#: (reason, behaviour, hang up after s): four take the offer by key, three by voice, three decline,
#: four hang up (one too soon to be recovered), six just wait for an agent.
_PLAN = (
    ("billing", "dtmf1", None), ("internet", "wait", None), ("cancel", "yes", None), ("complaint", "abandon", 35.0),
    ("billing", "dtmf2", None), ("internet_en", "yes", None), ("fraud", "wait", None), ("person", "dtmf1", None),
    ("cancel", "wait", None), ("complaint", "no", None), ("billing", "abandon", 7.0), ("internet", "dtmf1", None),
    ("cancel_en", "wait", None), ("person", "abandon", 30.0), ("billing", "yes", None), ("internet", "dtmf2", None),
    ("complaint", "wait", None), ("cancel", "dtmf1", None), ("billing", "abandon", 25.0), ("fraud", "wait", None),
)


def crowd_plan() -> list[Caller]:
    return [
        Caller(name=f"caller{i + 1:02d}", lang=_TEXTS[reason][0], text=_TEXTS[reason][1],
               number=f"+52555555{1000 + i:04d}" if _TEXTS[reason][0] == "es" else f"+1415555{1000 + i:04d}",
               behaviour=behaviour, hangup_after_s=after, start_s=1.5 * i)  # type: ignore[arg-type]
        for i, (reason, behaviour, after) in enumerate(_PLAN)
    ]


def queue_overrides(agents_port: int) -> dict[str, Any]:
    """The scenario's queue: SLA 15 s, calls of about 25 s, offers checked each second, recoveries 5 s after a hang-up."""
    return {
        "queues": {"general": {
            "agents": [{"id": name, "uri": f"sip:{name}@127.0.0.1:{agents_port}"} for name in AGENTS],
            "sla_s": 15, "ring_timeout_s": 8, "wrap_up_s": 1, "max_wait_s": 180, "default_handle_time_s": 25,
            "offer": {"check_interval_s": 1, "interval_s": 30, "max_offers": 2, "holdout_share": 0.1},
            "recovery": {"delay_s": 5, "min_abandon_s": 3},
        }},
        "routing.default_queue": "general",
        # The operator's policy: callers who called may be written to about their call.
        "whatsapp.consent.required": False,
    }


async def run_queue_demo(settings: Settings, agents: asyncio.subprocess.Process) -> None:
    api = f"http://{settings.http.host}:{settings.http.port}"
    plan = crowd_plan()
    print(f"\nQueue scenario: {len(plan)} callers, {len(AGENTS)} agents, SLA {settings.queues['general'].sla_s:.0f} s\n", flush=True)
    answered: list[dict[str, Any]] = []
    agent_lines = asyncio.create_task(_follow_agents(agents, answered))
    with tempfile.TemporaryDirectory(prefix="puente-demo-") as tmp:
        plan_path = Path(tmp) / "plan.json"
        plan_path.write_text(plan_json(plan))
        errors = Path(tmp) / "crowd.log"
        with errors.open("wb") as log:
            crowd = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.dev.crowd", "--gateway", f"{settings.sip.host}:{settings.sip.port}",
                "--api", api, "--plan", str(plan_path), stdout=asyncio.subprocess.PIPE, stderr=log,
            )
        async with httpx.AsyncClient(base_url=api, timeout=10) as client:
            snapshots = asyncio.create_task(_print_queue(client))
            await _follow_crowd(crowd)
            snapshots.cancel()
            if crowd.returncode:
                raise RuntimeError(f"the crowd of callers failed ({crowd.returncode}): {errors.read_text()[-2000:]}")
            await _wait_for_recoveries(client, plan)
            records = await _records(client, plan)
    agent_lines.cancel()
    _print_counts(records, answered, api)


async def _follow_crowd(crowd: asyncio.subprocess.Process) -> None:
    assert crowd.stdout is not None
    async for line in crowd.stdout:
        event = json.loads(line)
        if event["event"] == "offered":
            what = {"dtmf1": "presses 1", "yes": "says yes", "dtmf2": "presses 2", "no": "says no"}.get(event["behaviour"], "ignores it")
            print(f"  {event['caller']} is offered WhatsApp and {what}", flush=True)
        elif event["event"] == "ended":
            print(f"  {event['caller']} call ended ({event['ended_by']}, {event['duration_s']} s)", flush=True)
        elif event["event"] == "placed" and event["behaviour"] == "abandon":
            print(f"  {event['caller']} calls (and will hang up in the queue)", flush=True)
        elif event["event"] == "placed":
            print(f"  {event['caller']} calls", flush=True)
    await crowd.wait()


async def _follow_agents(agents: asyncio.subprocess.Process, answered: list[dict[str, Any]]) -> None:
    assert agents.stdout is not None
    async for line in agents.stdout:
        event = json.loads(line)
        if event.get("event") != "answered":
            continue
        answered.append(event)
        context, headers = event.get("context", {}), event["headers"]
        print(f"  agent {event['agent']} answers {headers.get('X-Puente-Intent')} (priority {headers.get('X-Puente-Priority')}, "
              f"waited {headers.get('X-Puente-Wait-S')} s): “{context.get('transcript', '')}”", flush=True)


async def _print_queue(client: httpx.AsyncClient) -> None:
    while True:
        await asyncio.sleep(5)
        try:
            (queue,) = (await client.get("/v1/queues")).json()
        except (httpx.HTTPError, ValueError):
            continue
        waiting = [w for w in queue["waiting"] if w["state"] != "connected"]
        agents = ", ".join(f"{a['id']} {a['state']}" for a in queue["agents"])
        print(f"  [queue] {len(waiting)} waiting, est. wait {queue['estimated_wait_s']:.0f} s; {agents}", flush=True)


async def _records(client: httpx.AsyncClient, plan: list[Caller]) -> list[dict[str, Any]]:
    numbers = {c.number for c in plan}
    calls = (await client.get("/v1/calls", params={"limit": 500})).json()
    ids = [c["call_id"] for c in calls if c["caller_number"] in numbers]
    return [(await client.get(f"/v1/calls/{call_id}")).json() for call_id in ids]


async def _wait_for_recoveries(client: httpx.AsyncClient, plan: list[Caller], timeout_s: float = 45.0) -> None:
    """The recoveries go out ``delay_s`` after each hang-up (and one message per customer per pacing interval)."""
    for _ in range(int(timeout_s / 0.5)):
        pending = [m for r in await _records(client, plan) for m in r["messages"] if m["status"] in ("pending", "sending")]
        if not pending:
            return
        await asyncio.sleep(0.5)


def _print_counts(records: list[dict[str, Any]], answered: list[dict[str, Any]], api: str) -> None:
    events = Counter(e["type"] for r in records for e in r["events"])
    accepted = Counter(e["data"]["how"] for r in records for e in r["events"] if e["type"] == "offer_accepted")
    messages = [(r, m) for r in records for m in r["messages"]]
    outcomes = Counter(r["outcome"] or "still up" for r in records)
    holdout = sum(1 for r in records for e in r["events"] if e["type"] == "queue_joined" and e["data"]["holdout"])
    not_recovered = Counter(e["data"]["reason"] for r in records for e in r["events"] if e["type"] == "recovery_not_offered")
    print("\nCounts (from the gateway's records):")
    print(f"  calls {len(records)}: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print(f"  offers made {events['offer_made']} (holdout, never offered: {holdout}); accepted by DTMF {accepted['dtmf']}, "
          f"by voice {accepted['speech']}; declined {events['offer_declined']}; ignored {events['offer_ignored']}")
    print(f"  agents answered {len(answered)}, with context {sum(1 for a in answered if a.get('context', {}).get('transcript'))}; "
          f"missed rings {events['agent_missed']}")
    print(f"  abandoned in the queue {outcomes['abandoned']}: recoveries scheduled {events['recovery_scheduled']}, "
          f"not sent {dict(not_recovered)}")
    for purpose, label in (("deflection", "offered chats"), ("recovery", "recovered chats")):
        chats = [m for _, m in messages if m["purpose"] == purpose]
        statuses = Counter(m["status"] for m in chats)
        print(f"  {label}: {len(chats)} ({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))})")
        for m in chats[:3]:
            print(f"      {api}/sandbox/chat/{quote(m['to_number'])}")
