"""The call state machine (``gateway.call.session``), one behaviour per test, in milliseconds.

No SIP and no model: the session runs with a fake SIP edge, a scripted speech pipeline, the real
endpointer (with a VAD that calls any non-silent frame speech), the real routing policy and prompts,
and a real context store on a SQLite file (see ``tests/support/session.py``). The last test checks
that these tests, together, take every transition in ``TRANSITIONS``.
"""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.call.context import CALL_ID_HEADER, INTENT_HEADER, LANGUAGE_HEADER
from gateway.call.routing import RoutingPolicy
from gateway.call.session import TRANSITIONS, CallState
from gateway.call.speech import AsrSaturated
from gateway.config import RoutingSettings
from gateway.numbers import CallerNumber
from tests.support.session import AGENT, NUMBER, BreakingStore, Call, TransitionLog, placed_call
from tests.support.whatsapp import T0, account_event, fresh_account, template_status

S = CallState
WITH_AGENT = {"routing.agent_uri": AGENT}
ORDER = "Quiero saber dónde está mi pedido."  # order_status: routes to WhatsApp
BILL = "Me cobraron dos veces la factura"  # billing_dispute: stays in voice

# --- the coverage collector: every transition the calls below took, from what they recorded ----

LOG = TransitionLog()


@pytest.fixture(autouse=True)
def _ran(request):
    LOG.ran.add(request.node.nodeid)


class Phone:
    """Places calls to one gateway (one context store, kept across the calls of a test)."""

    def __init__(self, db: Path) -> None:
        self.db = db

    def call(self, **options: Any):
        return placed_call(self.db, on_record=LOG.note, **options)


@pytest.fixture
def phone(tmp_path, empty_store) -> Phone:
    db = tmp_path / "puente.db"
    shutil.copyfile(empty_store, db)
    return Phone(db)


def run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10))


async def greeted(call: Call) -> None:
    """The caller heard the whole greeting; the gateway listens."""
    await call.connect()
    await call.prompt_ends()


async def asked_for_consent(call: Call) -> None:
    """The caller gave a WhatsApp reason, has no consent on record, and hears the question."""
    await greeted(call)
    await call.say(ORDER, "order_status")
    assert call.state is S.CONSENTING


async def decisions(call: Call) -> list[tuple[str, str]]:
    return [(d["route"], d["reason"]) for d in (await call.record())["decisions"]]


# --- answering and listening -------------------------------------------------------------------


def test_the_gateway_greets_the_caller_once_audio_flows(phone):
    async def go():
        async with phone.call() as call:
            assert call.state is S.ANSWERED and call.prompts == []
            await call.connect()
            assert call.state is S.GREETING
            assert call.telephony.prompts == ["es/greeting"]
            record = await call.record()
            assert (record["state"], record["line"], record["caller_number"]) == ("greeting", "es", NUMBER)
            assert (record["asr_model"], record["nlu_version"]) == ("whisper-scripted", "nlu-scripted")
            assert (record["language"], await call.events("language_forced")) == ("es", [{"language": "es"}])
    run(go)


def test_a_caller_who_talks_over_the_greeting_interrupts_it_and_is_heard_whole(phone):
    async def go():
        async with phone.call() as call:
            await call.connect()
            await call.silence(1500)
            await call.say(BILL, "billing_dispute")
            assert call.telephony.commands[:2] == [("play", "es/greeting"), ("stop_playback",)]
            assert await call.events("barge_in") == [{"at_ms": 1500}]
            # Whisper gets the utterance with 300 ms of pre-roll and a 200 ms tail (15 + 50 + 10 frames).
            assert call.speech.asked[0] == ("transcribe", 75, ["es"])
            (utterance,) = (await call.record())["utterances"]
            assert (utterance["start_ms"], utterance["speech_end_ms"], utterance["end_reason"]) == (1500, 2500, "early")
            assert (utterance["text"], utterance["language"]) == (BILL, "es")
            assert call.prompts == ["greeting", "hold"]  # the interrupted greeting's end changed nothing
    run(go)


def test_the_no_input_clock_starts_when_the_greeting_has_been_heard(phone):
    async def go():
        async with phone.call() as call:
            await call.connect()
            await call.silence(6000)  # a long greeting: the caller is listening, not silent
            assert (call.state, call.prompts) == (S.GREETING, ["greeting"])
            await call.prompt_ends()
            assert call.state is S.LISTENING
            assert await call.stay_silent() == 5000
            assert (call.state, call.prompts) == (S.REPROMPTING, ["greeting", "no_input"])
            assert await call.events("no_input") == [{"count": 1, "at_ms": 11_000}]
    run(go)


def test_a_silent_caller_hears_the_no_input_prompt_then_a_reprompt_then_goes_to_voice(phone):
    async def go():
        async with phone.call() as call:
            await greeted(call)
            for _ in range(2):
                assert await call.stay_silent() == 5000
                assert call.state is S.REPROMPTING
                await call.prompt_ends()
            assert await call.stay_silent() == 5000
            assert (call.state, call.prompts) == (S.ACTING, ["greeting", "no_input", "reprompt", "hold"])
            assert [e["count"] for e in await call.events("no_input")] == [1, 2, 3]
            (decision,) = (await call.record())["decisions"]
            assert (decision["route"], decision["reason"]) == ("voice", "no input after 2 prompt(s)")
            assert (decision["intent"], decision["utterance_seq"]) == (None, None)
    run(go)


def test_a_caller_silent_at_first_is_heard_after_the_no_input_prompt(phone):
    async def go():
        async with phone.call(settings=WITH_AGENT) as call:
            await greeted(call)
            await call.stay_silent()
            await call.say(BILL, "billing_dispute")  # over the no-input prompt
            assert (call.state, call.prompts) == (S.ACTING, ["greeting", "no_input", "transfer"])
            assert await decisions(call) == [("voice", "billing_dispute routes to voice")]
    run(go)


@pytest.mark.parametrize(
    "text, intent, confidence, why",
    [
        ("Eh, pues, no sé", "order_status", 0.3, "order_status at confidence 0.30 < 0.50"),
        ("¿Cuál es la capital de Francia?", "out_of_scope", 0.95, "out of scope"),
        ("", None, 0.0, "nothing understood"),  # noise that Whisper drops
    ],
    ids=["low confidence", "out of scope", "noise"],
)
def test_a_caller_not_understood_is_reprompted_once_then_goes_to_voice(phone, text, intent, confidence, why):
    async def go():
        async with phone.call() as call:
            await greeted(call)
            await call.say(text, intent, confidence)
            assert (call.state, call.prompts) == (S.REPROMPTING, ["greeting", "reprompt"])
            await call.prompt_ends()
            await call.say(text, intent, confidence)
            assert (call.state, call.prompts) == (S.ACTING, ["greeting", "reprompt", "hold"])
            assert await decisions(call) == [("reprompt", f"{why}; reprompt 1 of 1"), ("voice", f"{why} after 1 reprompt(s)")]
            if not text:
                assert "classify" not in call.speech.methods_asked()
                assert [u["dropped"] for u in (await call.record())["utterances"]] == ["no_speech", "no_speech"]
    run(go)


def test_a_caller_understood_after_a_reprompt_is_routed_by_the_second_utterance(phone):
    async def go():
        async with phone.call(settings=WITH_AGENT) as call:
            await greeted(call)
            await call.say("Eh, pues, llamaba por lo de", "out_of_scope", 0.8)
            await call.say(BILL, "billing_dispute")  # over the reprompt
            assert call.telephony.commands[-3:] == [("play", "es/reprompt"), ("stop_playback",), ("play", "es/transfer")]
            record = await call.record()
            assert [(d["seq"], d["utterance_seq"], d["route"]) for d in record["decisions"]] == [(1, 1, "reprompt"), (2, 2, "voice")]
            assert record["transcript"] == f"Eh, pues, llamaba por lo de {BILL}"
            assert (record["intent"], record["confidence"]) == ("billing_dispute", 0.93)
    run(go)


def test_the_decision_records_how_long_each_part_of_the_callers_wait_took(phone):
    async def go():
        async with phone.call(settings={"endpointing.early_silence_ms": 0}) as call:  # early commit off
            await greeted(call)
            waited = await call.say(BILL, "billing_dispute", transcription_s=0.25, classification_s=0.004)
            assert waited == 600  # the endpointer's end-of-speech silence
            record = await call.record()
            assert record["utterances"][0]["timings"] == {"endpointing_ms": 600.0, "transcription_ms": 250.0}
            assert record["decisions"][0]["timings"] == {
                "endpointing_ms": 600.0, "transcription_ms": 250.0, "classification_ms": 4.0,
                "routing_ms": 0.0, "end_of_speech_to_decision_ms": 854.0,
            }
    run(go)


# --- early commit: deciding at a pause ---------------------------------------------------------------


def test_a_complete_confident_request_is_committed_at_the_early_pause(phone):
    async def go():
        async with phone.call(settings=WITH_AGENT) as call:
            await greeted(call)
            waited = await call.say(BILL, "billing_dispute", transcription_s=0.25, classification_s=0.004)
            # Transcribed and classified at the 300 ms pause (early_silence_ms), committed once the pause reached
            # early_commit_silence_ms (460 ms), instead of end_silence_ms (600 ms).
            assert waited == 460
            assert (call.state, call.prompts) == (S.ACTING, ["greeting", "transfer"])
            assert call.speech.methods_asked() == ["transcribe", "classify"]  # once each
            record = await call.record()
            (utterance,) = record["utterances"]
            assert (utterance["end_reason"], utterance["text"], utterance["speech_end_ms"]) == ("early", BILL, 1000)
            assert utterance["timings"] == {
                "endpointing_ms": 714.0, "transcription_ms": 250.0, "early_commit": 1.0, "early_saved_ms": 140.0,
            }  # endpointing_ms: the fake clock ran the 254 ms of understanding at the 300 ms pause, between frames
            (decision,) = record["decisions"]
            assert (decision["route"], decision["intent"]) == ("voice", "billing_dispute")
            assert decision["timings"]["end_of_speech_to_decision_ms"] == 714.0  # 854 with the full silence
    run(go)


@pytest.mark.parametrize(
    "first, intent, confidence, why",
    [
        ("Quiero saber el estado de mi", "order_status", 0.95, "ends with 'mi'"),
        ("Me cobraron dos veces la factura", "billing_dispute", 0.6, "not confident"),
        ("¿Cuál es la capital de Francia?", "out_of_scope", 0.99, "not understood"),
    ],
    ids=["ends open", "not confident", "out of scope"],
)
def test_words_that_are_not_a_complete_request_wait_for_the_full_silence_and_are_transcribed_once(
    phone, first, intent, confidence, why
):
    async def go():
        async with phone.call(settings=WITH_AGENT) as call:
            await greeted(call)
            waited = await call.say(first, intent, confidence)
            assert waited == 600
            assert call.speech.methods_asked() == ["transcribe", "classify"]  # the pause's, reused at the end
            (utterance,) = (await call.record())["utterances"]
            assert (utterance["end_reason"], utterance["text"]) == ("silence", first)
            assert (utterance["timings"]["early_commit"], utterance["timings"]["speculation_reused"]) == (0.0, 1.0)
            assert "early_saved_ms" not in utterance["timings"]
    run(go)
    from nlu import open_ending
    assert (open_ending(first, "es") or ("not confident" if confidence < 0.8 else "not understood")) == why


def test_a_caller_who_pauses_mid_request_is_not_cut_off_and_the_pause_is_dropped(phone):
    async def go():
        async with phone.call() as call:
            await greeted(call)
            # "quiero saber el estado de mi" … 400 ms … "pedido": the pause's words end open, the caller goes on.
            waited = await call.pause_then_say("Quiero saber el estado de mi", "pedido", pause_ms=400,
                                               first_intent="order_status", first_confidence=0.95,
                                               intent="order_status", confidence=0.97)
            assert waited == 460  # the whole request is complete at its own pause
            assert call.state is S.CONSENTING
            assert [a[0] for a in call.speech.asked] == ["transcribe", "classify", "transcribe", "classify"]
            record = await call.record()
            (utterance,) = record["utterances"]  # the pause's words are never recorded
            assert (utterance["text"], utterance["start_ms"], utterance["end_reason"]) == (
                "Quiero saber el estado de mi pedido", 0, "early")
            assert record["transcript"] == "Quiero saber el estado de mi pedido"
            assert await call.events("state") == [
                {"from": "answered", "to": "greeting"}, {"from": "greeting", "to": "listening"},
                {"from": "listening", "to": "transcribing"}, {"from": "transcribing", "to": "classifying"},
                {"from": "classifying", "to": "deciding"}, {"from": "deciding", "to": "consenting"},
            ]
    run(go)


def test_a_speculation_still_running_when_the_caller_speaks_again_is_dropped(phone):
    async def go():
        async with phone.call(settings=WITH_AGENT) as call:
            await greeted(call)
            busy = call.speech.hold("transcribe")
            # Complete words at the pause, but Whisper is slow and the caller goes on before it answers.
            call.speech.will_hear(BILL, language="es", elapsed_s=0.2)
            await call.voice(1000)
            await call.silence(400)
            assert call.speech.methods_asked() == ["transcribe"]  # at 300 ms, still running
            await call.voice(500)
            busy.set()
            await call.settle()
            assert call.state is S.LISTENING  # the stale result decided nothing
            assert call.speech.methods_asked() == ["transcribe"]  # nor was it classified
            call.speech.gates.pop("transcribe")
            waited = await call.say(f"{BILL} del mes pasado", "billing_dispute", 0.97, speech_ms=0)
            assert waited == 460
            record = await call.record()
            assert [u["text"] for u in record["utterances"]] == [f"{BILL} del mes pasado"]
            assert record["utterances"][0]["speech_end_ms"] == 1900
            assert call.prompts == ["greeting", "transfer"]
    run(go)


def test_a_complete_request_is_not_committed_before_the_early_commit_silence_and_a_caller_who_goes_on_is_heard(phone):
    async def go():
        async with phone.call(settings=WITH_AGENT) as call:
            await greeted(call)
            # Understood at once (a fast server), complete and confident: still not decided on a 400 ms breath.
            waited = await call.pause_then_say(BILL, "del mes pasado", pause_ms=400, first_intent="billing_dispute",
                                               first_confidence=0.97, intent="billing_dispute", confidence=0.97)
            assert waited == 460
            assert [u["text"] for u in (await call.record())["utterances"]] == [f"{BILL} del mes pasado"]
    run(go)


def test_a_caller_who_hangs_up_during_the_speculation_keeps_what_they_said(phone):
    async def go():
        async with phone.call() as call:
            await greeted(call)
            busy = call.speech.hold("transcribe")
            await call.start_speaking(800, heard="Quiero saber dónde está mi pedido")
            await call.silence(300)
            assert call.speech.methods_asked() == ["transcribe"]  # the speculation, held
            assert call.state is S.LISTENING
            asyncio.get_running_loop().call_soon(busy.set)  # Whisper answers right after the hangup arrives
            await call.hang_up()
            record = await call.ended()
            assert record["outcome"] == "abandoned"
            (utterance,) = record["utterances"]
            assert (utterance["text"], utterance["end_reason"]) == ("Quiero saber dónde está mi pedido", "flush")
            assert call.speech.methods_asked() == ["transcribe"]  # reused, not run again; nothing classified
            assert record["decisions"] == []
    run(go)


def test_no_speculation_while_utterances_wait_for_whisper(phone):
    async def go():
        async with phone.call(settings=WITH_AGENT) as call:
            await greeted(call)
            call.speech.backlog = 2
            assert await call.say(BILL, "billing_dispute") == 600  # transcribed at its end, as without early commit
            assert call.speech.methods_asked() == ["transcribe", "classify"]
            (utterance,) = (await call.record())["utterances"]
            assert (utterance["timings"]["early_commit"], utterance["timings"]["speculation_reused"]) == (0.0, 0.0)
    run(go)


def test_yes_no_turns_keep_their_own_short_silence_and_are_never_committed_early(phone):
    async def go():
        async with phone.call() as call:
            await asked_for_consent(call)
            await call.prompt_ends()
            assert await call.answer("yes", speech_ms=400) == 400  # whatsapp.consent.silence_ms, no speculation
            assert call.speech.methods_asked()[-1] == "recognize_yes_no"
            assert call.speech.methods_asked().count("transcribe") == 1  # the request's only
    run(go)


# --- asking for an agent -------------------------------------------------------------------------


async def _in_greeting(call: Call) -> None:
    await call.connect()


async def _in_reprompting(call: Call) -> None:
    await greeted(call)
    await call.say("Eh, pues", "out_of_scope", 0.9)


@pytest.mark.parametrize(
    "reach, prompt_playing, intent_header",
    [
        (_in_greeting, True, "unknown"),
        (greeted, False, "unknown"),
        (_in_reprompting, True, "out_of_scope"),
        (asked_for_consent, True, "order_status"),
    ],
    ids=["greeting", "listening", "reprompting", "consenting"],
)
def test_a_caller_who_presses_0_reaches_an_agent(phone, reach, prompt_playing, intent_header):
    async def go():
        async with phone.call(settings=WITH_AGENT) as call:
            await reach(call)
            played = len(call.prompts)
            assert call.telephony.listening
            await call.press("0")
            assert call.state is S.ACTING
            assert not call.telephony.listening  # nothing said now is heard: the frames stop at the SIP edge
            expected = [("stop_playback",)] * prompt_playing + [("play", "es/transfer")]
            assert call.telephony.commands[-len(expected):] == expected
            assert len(call.prompts) == played + 1
            decision = (await call.record())["decisions"][-1]
            assert (decision["intent"], decision["confidence"]) == ("agent_request", 1.0)
            assert (decision["route"], decision["reason"]) == ("voice", "caller pressed 0 for an agent")
            await call.prompt_ends()
            # The header carries the call's reason as last classified, not the key pressed.
            assert call.telephony.commands[-1] == (
                "transfer", AGENT, {CALL_ID_HEADER: call.call_id, INTENT_HEADER: intent_header, LANGUAGE_HEADER: "es"},
            )
            assert await call.store.consents.latest(NUMBER) is None  # a pending consent question is dropped
            assert (await call.record())["messages"] == []
    run(go)


# --- WhatsApp consent ------------------------------------------------------------------------------


def test_a_whatsapp_reason_asks_for_consent_when_none_is_on_record(phone):
    async def go():
        async with phone.call() as call:
            await asked_for_consent(call)
            assert call.prompts == ["greeting", "consent"]
            assert await call.events("consent_asked") == [{"number": NUMBER}]
            assert (await call.record())["decisions"] == []  # the decision waits for the answer
    run(go)


def test_other_keys_during_the_consent_question_are_no_answer_but_travel_with_the_call(phone):
    async def go():
        async with phone.call() as call:
            await asked_for_consent(call)
            await call.press("5")
            assert (call.state, call.prompts) == (S.CONSENTING, ["greeting", "consent"])
            await call.press("1", method="sip_info")
            assert await call.events("dtmf") == [{"digit": "5", "method": "rfc4733"}, {"digit": "1", "method": "sip_info"}]
            assert (await call.record())["messages"][0]["payload"]["context"]["dtmf"] == "51"
    run(go)


async def _presses_1(call: Call) -> None:
    await call.press("1")


async def _presses_2(call: Call) -> None:
    await call.press("2")


async def _says_yes(call: Call) -> None:
    await call.prompt_ends()
    assert await call.answer("yes") == 400  # a yes/no answer ends after a shorter silence


async def _says_no(call: Call) -> None:
    await call.prompt_ends()
    await call.answer("no")


async def _answers_unclearly(call: Call) -> None:
    await call.prompt_ends()
    await call.answer(None)


async def _does_not_answer(call: Call) -> None:
    await call.prompt_ends()
    assert await call.stay_silent() == 4000  # whatsapp.consent.no_input_ms


@pytest.mark.parametrize(
    "answer, consent, route, reason",
    [
        (_presses_1, True, "whatsapp", "order_status routes to whatsapp; consent: dtmf"),
        (_presses_2, False, "voice", "order_status routes to whatsapp, but the caller declined WhatsApp (dtmf)"),
        (_says_yes, True, "whatsapp", "order_status routes to whatsapp; consent: speech"),
        (_says_no, False, "voice", "order_status routes to whatsapp, but the caller declined WhatsApp (speech)"),
        (_answers_unclearly, None, "voice", "order_status routes to whatsapp, but no consent: unclear answer"),
        (_does_not_answer, None, "voice", "order_status routes to whatsapp, but no consent: no answer"),
    ],
    ids=["presses 1", "presses 2", "says yes", "says no", "unclear answer", "no answer"],
)
def test_the_consent_answer_decides_between_whatsapp_and_voice(phone, answer, consent, route, reason):
    async def go():
        async with phone.call(settings=WITH_AGENT) as call:
            await asked_for_consent(call)
            await answer(call)
            assert call.state is S.ACTING
            assert call.prompts[-1] == ("whatsapp_sent" if route == "whatsapp" else "transfer")
            assert await decisions(call) == [(route, reason)]
            assert await call.store.consents.latest(NUMBER) is consent  # an unclear or missing answer is not one
            assert len((await call.record())["messages"]) == (route == "whatsapp")
    run(go)


def test_a_caller_may_answer_over_the_consent_question(phone):
    async def go():
        async with phone.call() as call:
            await asked_for_consent(call)
            await call.answer("yes")
            assert call.telephony.commands[-3:] == [("play", "es/consent"), ("stop_playback",), ("play", "es/whatsapp_sent")]
            assert call.speech.asked[-1][0::2] == ("recognize_yes_no", "es")
            assert await call.events("consent_answer") == [{"choice": "yes", "score": -0.05, "margin": 2.95}]
            assert await call.events("consent") == [{"granted": True, "method": "speech"}]
    run(go)


def test_the_consent_no_answer_clock_starts_when_the_question_has_been_heard(phone):
    async def go():
        async with phone.call() as call:
            await asked_for_consent(call)
            await call.silence(5000)  # listening to the question
            assert (call.state, call.prompts) == (S.CONSENTING, ["greeting", "consent"])
    run(go)


def test_consent_given_on_an_earlier_call_is_not_asked_again(phone):
    async def go():
        async with phone.call() as first:
            await asked_for_consent(first)
            await first.press("1")
        async with phone.call() as call:
            await greeted(call)
            await call.say(ORDER, "order_status")
            assert (call.state, call.prompts) == (S.ACTING, ["greeting", "whatsapp_sent"])
            assert await decisions(call) == [("whatsapp", "order_status routes to whatsapp")]
    run(go)


def test_a_caller_who_declined_on_an_earlier_call_is_asked_again(phone):
    async def go():
        async with phone.call() as first:
            await asked_for_consent(first)
            await first.press("2")
        async with phone.call() as call:
            await asked_for_consent(call)
    run(go)


def test_without_required_consent_a_whatsapp_reason_is_deflected_without_asking(phone):
    async def go():
        async with phone.call(settings={"whatsapp.consent.required": False}) as call:
            await greeted(call)
            await call.say(ORDER, "order_status")
            assert call.prompts == ["greeting", "whatsapp_sent"]
            assert await call.store.consents.latest(NUMBER) is None
    run(go)


def test_a_caller_who_does_not_answer_is_deflected_when_the_policy_says_so(phone):
    async def go():
        async with phone.call(settings={"whatsapp.consent.on_no_answer": "whatsapp"}) as call:
            await asked_for_consent(call)
            await _does_not_answer(call)
            assert call.prompts == ["greeting", "consent", "whatsapp_sent"]
            assert await decisions(call) == [("whatsapp", "order_status routes to whatsapp; consent: policy")]
            assert await call.store.consents.latest(NUMBER) is None  # nobody said yes
    run(go)


def test_a_caller_without_a_usable_number_is_kept_in_voice(phone):
    async def go():
        async with phone.call(caller=CallerNumber(None, "the caller is anonymous"), settings=WITH_AGENT) as call:
            await greeted(call)
            await call.say(ORDER, "order_status")
            assert call.prompts == ["greeting", "transfer"]
            assert await decisions(call) == [("voice", "order_status routes to whatsapp, but the caller is anonymous")]
            assert (await call.record())["caller_number"] is None
    run(go)


def test_a_caller_with_a_whatsapp_reason_is_kept_in_voice_while_the_follow_up_template_is_paused(phone):
    account = fresh_account()
    account.record(account_event("message_template_status_update", template_status("PAUSED", language="es")))

    async def go():
        async with phone.call(settings=WITH_AGENT, whatsapp=account) as call:
            await greeted(call)
            await call.say(ORDER, "order_status")
            assert call.prompts == ["greeting", "transfer"]  # not even asked for consent
            assert await decisions(call) == [
                ("voice", "order_status routes to whatsapp, but WhatsApp template call_followup (es) is paused")
            ]
            assert (await call.record())["messages"] == []
    run(go)


def test_deflections_resume_once_meta_approves_the_template_again_and_other_languages_never_stopped(phone):
    account = fresh_account()
    account.record(account_event("message_template_status_update", template_status("PAUSED", language="es")))
    account.record(account_event("message_template_status_update", template_status("DISABLED", language="en")))
    account.record(account_event("message_template_status_update", template_status("APPROVED", language="es"), time=T0 + 60))

    async def go():
        async with phone.call(settings={"whatsapp.consent.required": False}, whatsapp=account) as call:
            await greeted(call)
            await call.say(ORDER, "order_status")
            assert call.prompts == ["greeting", "whatsapp_sent"]
            assert await decisions(call) == [("whatsapp", "order_status routes to whatsapp")]
        async with phone.call(line="en", settings={"whatsapp.consent.required": False, **WITH_AGENT}, whatsapp=account) as call:
            await greeted(call)
            await call.say("Where is my order?", "order_status", language="en")
            assert await decisions(call) == [
                ("voice", "order_status routes to whatsapp, but WhatsApp template call_followup (en) is disabled")
            ]
    run(go)


# --- WhatsApp --------------------------------------------------------------------------------------


def test_a_whatsapp_decision_queues_the_follow_up_with_the_calls_context_then_ends_the_call(phone):
    async def go():
        async with phone.call() as call:
            await asked_for_consent(call)
            await call.press("1")
            assert (call.state, call.prompts) == (S.ACTING, ["greeting", "consent", "whatsapp_sent"])
            record = await call.record()
            (decision,) = record["decisions"]
            assert (decision["seq"], decision["utterance_seq"], decision["intent"], decision["confidence"]) == (1, 1, "order_status", 0.93)
            assert decision["ranking"] == [{"name": "order_status", "confidence": 0.93}, {"name": "complaint", "confidence": 0.035}]
            (message,) = record["messages"]
            assert (message["purpose"], message["to_number"], message["status"]) == ("deflection", NUMBER, "pending")
            assert message["idempotency_key"] == f"{call.call_id}:deflection"
            assert message["payload"] == {
                "template": "call_followup",
                "language": "es",
                "parameters": ["order_status", ORDER.rstrip(".")],
                "context": {
                    "call_id": call.call_id, "sip_call_id": call.session.call.sip_call_id, "line": "es", "language": "es",
                    "intent": "order_status", "confidence": 0.93, "transcript": ORDER, "dtmf": "1",
                    "queue": None, "priority": None, "waited_s": None,
                },
            }
            assert ("hangup", None) not in call.telephony.commands  # not before the caller heard it
            await call.prompt_ends()
            assert call.telephony.commands[-1] == ("hangup", None)
            record = await call.ended()
            assert (record["outcome"], record["ended_by"], record["route"]) == ("deflected", "local", "whatsapp")
    run(go)


def test_a_caller_who_hangs_up_during_the_whatsapp_confirmation_is_still_deflected(phone):
    async def go():
        async with phone.call() as call:
            await asked_for_consent(call)
            await call.press("1")
            await call.hang_up()
            record = await call.ended()
            assert (record["outcome"], record["ended_by"]) == ("deflected", "remote")
    run(go)


def test_on_a_bilingual_line_the_callers_language_is_detected_then_kept(phone):
    async def go():
        async with phone.call(line="default") as call:
            await greeted(call)
            assert call.telephony.prompts == ["es/greeting"]  # the line's first language
            await call.say("I'd like to know where my order is", "order_status", language="en")
            assert call.speech.asked[0][2] == ["es", "en"]  # Whisper chooses between the line's languages only
            assert call.telephony.prompts[-1] == "en/consent"
            await call.answer("yes")
            assert call.speech.asked[-1][0::2] == ("recognize_yes_no", "en")
            assert call.telephony.prompts[-1] == "en/whatsapp_sent"
            record = await call.record()
            assert (record["language"], record["messages"][0]["payload"]["language"]) == ("en", "en")
            assert await call.events("language_forced") == []
    run(go)


def test_after_the_language_is_known_whisper_is_forced_to_it(phone):
    async def go():
        async with phone.call(line="default") as call:
            await greeted(call)
            await call.say("Hmm, well", "out_of_scope", 0.9, language="en")
            assert call.telephony.prompts[-1] == "en/reprompt"
            await call.say(BILL, "billing_dispute", language="en")
            assert [a[2] for a in call.speech.asked if a[0] == "transcribe"] == [["es", "en"], ["en"]]
    run(go)


# --- voice: transfer and hold ----------------------------------------------------------------------


def test_a_voice_call_is_transferred_to_the_agent_with_its_context_in_x_puente_headers(phone):
    async def go():
        async with phone.call(settings=WITH_AGENT) as call:
            await greeted(call)
            await call.say(BILL, "billing_dispute")
            assert (call.state, call.prompts) == (S.ACTING, ["greeting", "transfer"])
            assert not [c for c in call.telephony.commands if c[0] == "transfer"]  # not before the caller heard it
            await call.prompt_ends()
            headers = {CALL_ID_HEADER: call.call_id, INTENT_HEADER: "billing_dispute", LANGUAGE_HEADER: "es"}
            assert call.telephony.commands[-1] == ("transfer", AGENT, headers)
            assert await call.events("transfer_requested") == [{"target": AGENT}]
            await call.transfer_reports(100, final=False)
            assert call.telephony.commands[-1][0] == "transfer"
            await call.transfer_reports(200)
            assert call.telephony.commands[-1] == ("hangup", None)
            record = await call.ended()
            assert (record["outcome"], record["ended_by"]) == ("transferred", "local")
            assert await call.events("transfer_progress") == [{"status": 100, "final": False}, {"status": 200, "final": True}]
    run(go)


def test_a_failed_transfer_puts_the_caller_on_hold_without_trying_again(phone):
    async def go():
        async with phone.call(settings=WITH_AGENT) as call:
            await greeted(call)
            await call.say(BILL, "billing_dispute")
            await call.prompt_ends()
            await call.transfer_reports(486)
            assert call.prompts == ["greeting", "transfer", "hold"]
            assert await call.events("hold") == [{"timeout_s": 60.0}]
            await call.prompt_ends()
            assert call.prompts[-1] == "hold"  # keeps the caller company
            assert [c[0] for c in call.telephony.commands].count("transfer") == 1
            assert call.state is S.ACTING
    run(go)


def test_a_caller_on_hold_hears_goodbye_at_the_hold_timeout_and_is_recorded_unserved(phone):
    async def go():
        async with phone.call(settings={"routing.hold_timeout_s": 0.05}) as call:
            await greeted(call)
            await call.say(BILL, "billing_dispute")
            assert call.prompts == ["greeting", "hold"]
            await call.prompt_ends()
            assert call.prompts == ["greeting", "hold", "hold"]
            await call.until(lambda: call.prompts[-1] == "goodbye")
            await call.prompt_ends()
            assert call.telephony.commands[-1] == ("hangup", None)
            record = await call.ended()
            assert (record["outcome"], record["ended_by"]) == ("unserved", "local")
    run(go)


# --- Whisper is saturated --------------------------------------------------------------------------


def test_a_caller_heard_while_whispers_backlog_is_full_goes_the_voice_way_at_once(phone):
    async def go():
        async with phone.call(settings=WITH_AGENT) as call:
            await greeted(call)
            call.speech.failures["transcribe"] = AsrSaturated(4, 3.2)
            await call.say(ORDER, "order_status")
            assert call.state is S.ACTING
            assert call.telephony.commands[-1] == ("play", "es/transfer")
            decision = (await call.record())["decisions"][-1]
            assert (decision["route"], decision["intent"]) == ("voice", None)
            assert decision["reason"] == "speech recognition is saturated (4 utterances waiting, about 3.2 s)"
            assert decision["timings"]["end_of_speech_to_decision_ms"] == decision["timings"]["endpointing_ms"]
            assert await call.events("asr_saturated") == [{"waiting": 4, "expected_wait_s": 3.2}]
            assert (await call.record())["utterances"] == []  # nothing was transcribed, nothing is made up
    run(go)


def test_a_consent_answer_while_whispers_backlog_is_full_counts_as_no_answer(phone):
    async def go():
        async with phone.call() as call:
            await asked_for_consent(call)
            await call.prompt_ends()
            call.speech.failures["recognize_yes_no"] = AsrSaturated(5, 4.0)
            await call.answer("yes")
            decision = (await call.record())["decisions"][-1]
            assert decision["route"] == "voice"
            assert decision["reason"].endswith("but no consent: speech recognition is saturated (5 utterances waiting, about 4.0 s)")
            assert await call.store.consents.latest(NUMBER) is None
    run(go)


# --- ending ----------------------------------------------------------------------------------------


async def _answered(call: Call) -> str:
    return ""


async def _greeting(call: Call) -> str:
    await call.connect()
    return ""


async def _mid_sentence(call: Call) -> str:
    await greeted(call)
    await call.start_speaking(800, heard="Quiero saber")
    assert call.state is S.LISTENING
    return "Quiero saber"


async def _reprompting(call: Call) -> str:
    await _in_reprompting(call)
    return "Eh, pues"


async def _consenting(call: Call) -> str:
    await asked_for_consent(call)
    return ORDER


async def _hearing_the_transfer_prompt(call: Call) -> str:
    await greeted(call)
    await call.say(BILL, "billing_dispute")
    return BILL


async def _on_hold(call: Call) -> str:
    await _hearing_the_transfer_prompt(call)
    await call.prompt_ends()
    await call.transfer_reports(503)
    return BILL


def _while_the_gateway(method: str, said: str = BILL, intent: str = "billing_dispute"):
    state = {"transcribe": S.TRANSCRIBING, "classify": S.CLASSIFYING}[method]

    async def reach(call: Call) -> str:
        """The gateway is still working on what the caller said (``method`` is busy; the speculation at the
        pause already asked for it, so the utterance waits for that one at the full silence)."""
        busy = call.speech.hold(method)
        await greeted(call)
        await call.say(said, intent, settle=False)
        await call.until(lambda: call.state is state, settle=False)
        asyncio.get_running_loop().call_soon(busy.set)  # done right after the caller's hangup is posted
        return said
    return reach


@pytest.mark.parametrize(
    "reach, agent, ends_in",
    [
        (_answered, False, S.ANSWERED),
        (_greeting, False, S.GREETING),
        (_mid_sentence, False, S.LISTENING),
        (_reprompting, False, S.REPROMPTING),
        (_consenting, False, S.CONSENTING),
        (_hearing_the_transfer_prompt, True, S.ACTING),
        (_on_hold, True, S.ACTING),
        # A hangup that arrives while the gateway works stops the turn: nothing is decided for a caller who left.
        (_while_the_gateway("transcribe"), False, S.TRANSCRIBING),
        (_while_the_gateway("classify"), False, S.CLASSIFYING),
    ],
    ids=["answered", "greeting", "listening", "reprompting", "consenting", "acting (transfer prompt)", "acting (on hold)",
         "transcribing", "classifying"],
)
def test_a_caller_who_hangs_up_is_recorded_as_abandoned_with_what_was_heard(phone, reach, agent, ends_in):
    async def go():
        async with phone.call(settings=WITH_AGENT if agent else None) as call:
            heard = await reach(call)
            await call.hang_up()
            record = await call.ended()
            assert (record["outcome"], record["ended_by"], record["state"]) == ("abandoned", "remote", "ended")
            assert ([S.ANSWERED] + [S(e["to"]) for e in await call.events("state")])[-1] is ends_in
            assert record["transcript"] == heard
            assert [u["text"] for u in record["utterances"]] == ([heard] if heard else [])
            assert record["messages"] == []
    run(go)


def test_a_caller_who_hangs_up_while_being_transcribed_is_abandoned_even_with_a_whatsapp_reason(phone):
    async def go():
        async with phone.call(settings={"whatsapp.consent.required": False}) as call:
            await _while_the_gateway("transcribe", ORDER, "order_status")(call)
            await call.hang_up()
            record = await call.ended()
            assert (record["outcome"], record["messages"]) == ("abandoned", [])
    run(go)


def test_the_words_of_a_caller_who_hangs_up_mid_sentence_are_transcribed(phone):
    async def go():
        async with phone.call() as call:
            await _mid_sentence(call)
            await call.hang_up()
            (utterance,) = (await call.ended())["utterances"]
            assert (utterance["text"], utterance["end_reason"], utterance["start_ms"]) == ("Quiero saber", "flush", 0)
            assert "classify" not in call.speech.methods_asked()  # nobody is left to route
    run(go)


def test_a_call_the_gateway_ends_by_stopping_is_recorded_as_interrupted(phone):
    async def go():
        async with phone.call() as call:
            await _in_reprompting(call)
            await call.gateway_stops()
            record = await call.ended()
            assert (record["outcome"], record["ended_by"], record["end_reason"]) == ("interrupted", "local", "gateway shutting down")
            assert record["transcript"] == "Eh, pues"
    run(go)


class _BrokenPolicy(RoutingPolicy):
    def decide(self, *args: Any, **kwargs: Any) -> Any:
        raise KeyError("routes")


@pytest.mark.parametrize("broken", ["transcribe", "classify", "decide"], ids=["transcribing", "classifying", "deciding"])
def test_an_internal_error_hangs_up_with_500_and_records_the_call_as_failed(phone, broken, caplog):
    async def go():
        policy = _BrokenPolicy(RoutingSettings()) if broken == "decide" else None
        async with phone.call(policy=policy) as call:
            if broken != "decide":
                call.speech.failures[broken] = RuntimeError(f"{broken} blew up")
            await greeted(call)
            await call.say(BILL, "billing_dispute")
            assert call.telephony.commands[-1] == ("hangup", 500)
            record = await call.ended()
            assert (record["outcome"], record["ended_by"], record["end_reason"]) == ("failed", "gateway", "internal error")
            assert record["transcript"] == ("" if broken == "transcribe" else BILL)
    run(go)
    assert "failed; hanging up" in caplog.text


def test_an_illegal_transition_is_refused_and_the_call_fails_with_500(phone, monkeypatch, caplog):
    monkeypatch.setitem(TRANSITIONS, S.LISTENING, TRANSITIONS[S.LISTENING] - {S.TRANSCRIBING})

    async def go():
        async with phone.call() as call:
            await greeted(call)
            await call.say(BILL, "billing_dispute")
            assert call.telephony.commands[-1] == ("hangup", 500)
            record = await call.ended()
            assert (record["outcome"], record["ended_by"]) == ("failed", "gateway")
            assert (await call.events("state"))[-1] == {"from": "greeting", "to": "listening"}  # the refused one is not recorded
            assert record["utterances"] == []  # the speculation at the pause was heard, but nothing was kept
    run(go)
    (failure,) = [r for r in caplog.records if r.exc_info]
    assert failure.exc_info[0] is RuntimeError
    assert "illegal transition listening → transcribing" in str(failure.exc_info[1])


# --- the context store fails ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "breaks_at, failure, asked",
    [
        ("calls.create", "call start", False),
        ("calls.record_utterance", "utterance", False),
        ("consents.record", "consent", True),
        ("calls.record_decision", "decision", True),
    ],
    ids=["at call start", "at the utterance", "at the consent answer", "at the decision and its message"],
)
def test_when_the_store_fails_mid_call_the_caller_stays_in_voice_and_is_served(phone, breaks_at, failure, asked, caplog):
    async def go():
        async with phone.call(settings=WITH_AGENT, store_breaks_at=breaks_at) as call:
            await greeted(call)
            await call.say(ORDER, "order_status")
            assert (call.state is S.CONSENTING) == asked
            if asked:
                await call.press("1")
            assert call.session.store_failure == f"{failure}: {BreakingStore.FULL}"
            assert call.prompts[-1] == "transfer" and "whatsapp_sent" not in call.prompts  # no WhatsApp promise
            await call.prompt_ends()
            await call.transfer_reports(200)
            assert call.telephony.commands[-1] == ("hangup", None)  # served, not dropped with a 500
            await call.over()
            record = await call.store.calls.get(call.call_id)
            if breaks_at == "calls.create":
                assert record is None
            else:
                assert (record["outcome"], record["decisions"], record["messages"]) == (None, [], [])
    run(go)
    assert "context store failed, the call continues unrecorded" in caplog.text


def test_when_the_store_fails_at_the_consent_lookup_the_caller_is_not_offered_whatsapp(phone):
    async def go():
        async with phone.call(settings=WITH_AGENT, store_breaks_at="consents.latest") as call:
            await greeted(call)
            await call.say(ORDER, "order_status")
            assert call.prompts == ["greeting", "transfer"]
    run(go)


# --- a second opinion on an unsure reading -------------------------------------------------------------


def test_an_unsure_reading_gets_a_second_opinion_that_routes_the_caller_when_it_is_sure(phone):
    async def go():
        async with phone.call(settings=WITH_AGENT) as call:
            await greeted(call)
            call.speech.will_reconsider(["me cobraron de más en la factura", "me cobraron de mas en la fractura"],
                                        "billing_dispute", 0.81, elapsed_s=0.4)
            await call.say("me colaron de más en la fractura", "out_of_scope", 0.39)
            assert call.speech.methods_asked()[-2:] == ["classify", "second_opinion"]
            assert await decisions(call) == [("voice", "billing_dispute routes to voice")]
            (opinion,) = await call.events("second_opinion")
            assert opinion["taken"] and opinion["first"] == {"intent": "out_of_scope", "confidence": 0.39}
            assert [h["text"] for h in opinion["hypotheses"]][0] == "me cobraron de más en la factura"
            record = await call.record()
            assert record["utterances"][0]["text"] == "me colaron de más en la fractura"  # what was heard first is kept
            assert record["decisions"][0]["timings"]["second_opinion_ms"] == 402.0  # Whisper again, then classifying
    run(go)


def test_a_second_opinion_that_is_unsure_too_leaves_the_reprompt(phone):
    async def go():
        async with phone.call() as call:
            await greeted(call)
            call.speech.will_reconsider(["pues no sé"], "order_status", 0.31, elapsed_s=0.3)
            await call.say("pues no se", "order_status", 0.3)
            assert await decisions(call) == [("reprompt", "order_status at confidence 0.30 < 0.50; reprompt 1 of 1")]
            (opinion,) = await call.events("second_opinion")
            assert not opinion["taken"]
    run(go)


def test_a_sure_reading_is_not_second_guessed(phone):
    async def go():
        async with phone.call(settings=WITH_AGENT) as call:
            await greeted(call)
            await call.say(BILL, "billing_dispute", 0.93)
            assert "second_opinion" not in call.speech.methods_asked()
    run(go)


# --- the table itself, and that the tests above walk all of it ----------------------------------------


def test_every_state_may_end_the_call_and_nothing_follows_ended():
    assert all(S.ENDED in TRANSITIONS[s] for s in S if s is not S.ENDED)
    assert TRANSITIONS[S.ENDED] == frozenset()
    assert TRANSITIONS[S.ACTING] == {S.ENDED}


def test_these_tests_take_every_transition_in_the_table(request):
    # The queue's states are test_call_queue.py's to cover.
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets if not {a, b} & {S.QUEUED, S.OFFERING, S.CONNECTED}}
    missing = LOG.untaken(request, table)
    assert not missing, f"no test takes {missing}"

