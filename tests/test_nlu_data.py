"""The bundled training data: complete, big enough, and unambiguous."""

from collections import Counter

import pytest

from nlu import INTENTS, OUT_OF_SCOPE, bundled_data_paths, load_examples
from nlu.taxonomy import DESCRIPTIONS
from nlu.text import normalize


@pytest.fixture(scope="module")
def examples():
    return load_examples(bundled_data_paths(), taxonomy=INTENTS)


def test_taxonomy_is_the_agreed_list_and_every_intent_is_described():
    assert INTENTS == (
        "order_status", "appointment", "duplicate_document", "opening_hours", "policy_info",
        "payment", "send_documents", "update_details", "billing_dispute", "technical_support",
        "cancel_service", "fraud_or_loss", "complaint", "agent_request", "out_of_scope",
    )
    assert OUT_OF_SCOPE in INTENTS
    assert set(DESCRIPTIONS) == set(INTENTS) and all(DESCRIPTIONS.values())


def test_bundled_files_are_spanish_and_english_rasa_files():
    paths = bundled_data_paths()
    assert [p.name for p in paths] == ["es.yml", "en.yml"]
    for p in paths:
        head = p.read_text(encoding="utf-8")
        assert 'version: "3.1"' in head and "\nnlu:\n" in head


def test_every_intent_has_at_least_40_examples_in_each_language(examples):
    counts = Counter((e.intent, e.language) for e in examples)
    for intent in INTENTS:
        for language in ("es", "en"):
            assert counts[(intent, language)] >= 40, (intent, language, counts[(intent, language)])


def test_no_text_is_under_two_intents(examples):
    seen: dict[str, str] = {}
    for e in examples:
        key = normalize(e.text)
        assert seen.setdefault(key, e.intent) == e.intent, (e.text, e.source, e.line)


def test_examples_point_at_their_line(examples):
    for e in examples[:50]:
        line = open(e.source, encoding="utf-8").read().splitlines()[e.line - 1]
        assert line.strip().startswith("- ")
        assert normalize(e.text) in normalize(line)
