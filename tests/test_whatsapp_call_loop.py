"""The whole loop with a real SIP call: call → whatsapp decision → consent → template in the
sandbox with the call's context → the customer replies → the flow runs against the demo backend
→ resolution → satisfaction recorded."""
from __future__ import annotations

import time
from urllib.parse import quote

import httpx
import pytest
from conftest import espeak

pytestmark = [pytest.mark.sip, pytest.mark.asr]

NUMBER = "+14155552001"


def wait_for(fetch, ready, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if ready(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_a_deflected_caller_is_served_to_resolution_in_the_whatsapp_chat(gateway, tmp_path):
    wav = espeak("Hi, I would like to know where my order is", "en", tmp_path / "order.wav")
    record = gateway.call("en", "--wav", str(wav), "--from", NUMBER, "--dtmf", "1")
    assert (record["intent"], record["route"], record["outcome"]) == ("order_status", "whatsapp", "deflected")

    chat = f"/sandbox/customers/{quote(NUMBER)}"
    messages = lambda: gateway.get(f"{chat}/messages")  # noqa: E731
    [template] = wait_for(messages, lambda ms: len(ms) >= 1)
    # The template names the call's reason and quotes the caller's own words.
    assert template["type"] == "template" and "order" in template["text"].lower()
    assert record["transcript"].strip(" .").lower() in template["text"].lower()

    def reply(text: str, expect_total: int) -> list[dict]:
        httpx.post(f"{gateway.api}{chat}/reply", json={"text": text}, timeout=10).raise_for_status()
        return wait_for(messages, lambda ms: len(ms) >= expect_total and ms[-1]["direction"] == "out")

    after_yes = reply("Yes, let's continue", 3)
    assert "order number" in after_yes[-1]["text"].lower()
    after_number = reply("It is 54321", 5)
    assert "54321" in after_number[-1]["text"] and "1 (poor) to 5" in after_number[-1]["text"]
    reply("5", 7)

    conversation = wait_for(
        lambda: gateway.get("/v1/conversations", number=NUMBER), lambda cs: cs and cs[0].get("csat") == 5
    )[0]
    assert (conversation["status"], conversation["resolution"], conversation["csat"]) == ("closed", "resolved", 5)
    assert conversation["call_id"] == record["call_id"]
