"""Training on the bundled data: accuracy, canonical phrases, determinism, save/load."""

import json

import numpy as np
import pytest

from nlu import INTENTS, IntentModel, bundled_data_paths, load_examples
from nlu.model import FORMAT_VERSION
from nlu.text import normalize
from nlu.train import save, train

# Phrases written for this test, not copied from the training data (checked below).
CANONICAL = [
    ("quiero saber dónde está mi pedido", "order_status"),
    ("hola buenas mire es que mi paquete no ha llegado todavia", "order_status"),
    ("compre unos audifonos la semana pasada y no me han llegado", "order_status"),
    ("where is my order", "order_status"),
    ("hi um my package was supposed to arrive on monday and it still isn't here", "order_status"),
    ("can you check the status of order 55123", "order_status"),
    ("quiero agendar una cita para el jueves", "appointment"),
    ("necesito cambiar la fecha de mi cita", "appointment"),
    ("i need to book an appointment for next tuesday", "appointment"),
    ("can i reschedule the technician visit", "appointment"),
    ("necesito una copia de mi factura del mes pasado", "duplicate_document"),
    ("me pueden reenviar el recibo de febrero", "duplicate_document"),
    ("i need a copy of my last bill", "duplicate_document"),
    ("can you send me a duplicate of my statement", "duplicate_document"),
    ("a qué hora abren mañana", "opening_hours"),
    ("están abiertos los domingos", "opening_hours"),
    ("what time do you close today", "opening_hours"),
    ("where is your closest branch", "opening_hours"),
    ("cuál es la política de devolución", "policy_info"),
    ("la garantía cubre la pantalla rota", "policy_info"),
    ("how long is the warranty", "policy_info"),
    ("can i return an item i bought online", "policy_info"),
    ("cómo puedo pagar mi recibo", "payment"),
    ("me pasan el link de pago", "payment"),
    ("how can i pay my bill", "payment"),
    ("can you send me the payment link", "payment"),
    ("tengo que mandarles una foto de mi identificación", "send_documents"),
    ("a qué correo les envío los documentos", "send_documents"),
    ("i need to send you a copy of my passport", "send_documents"),
    ("where do i send the photos", "send_documents"),
    ("quiero cambiar mi dirección de correo", "update_details"),
    ("me mudé y necesito actualizar mi domicilio", "update_details"),
    ("i need to change my phone number", "update_details"),
    ("i want to update my email", "update_details"),
    ("me cobraron dos veces este mes", "billing_dispute"),
    ("la factura vino muy cara y no entiendo por qué", "billing_dispute"),
    ("i was charged twice this month", "billing_dispute"),
    ("my bill is way higher than it should be", "billing_dispute"),
    ("no tengo internet desde la mañana", "technical_support"),
    ("la aplicación no me deja iniciar sesión", "technical_support"),
    ("my internet is not working", "technical_support"),
    ("the app keeps giving me an error", "technical_support"),
    ("quiero cancelar mi suscripción", "cancel_service"),
    ("quiero dar de baja mi plan", "cancel_service"),
    ("I want to cancel my subscription", "cancel_service"),
    ("i'd like to terminate my contract", "cancel_service"),
    ("me robaron la tarjeta", "fraud_or_loss"),
    ("hay un cargo en mi tarjeta que yo no hice", "fraud_or_loss"),
    ("someone stole my credit card", "fraud_or_loss"),
    ("i think my account was hacked", "fraud_or_loss"),
    ("quiero poner una queja por la mala atención", "complaint"),
    ("estoy muy molesto, nadie me resuelve nada", "complaint"),
    ("i want to file a complaint about your service", "complaint"),
    ("quiero hablar con una persona", "agent_request"),
    ("páseme con un asesor por favor", "agent_request"),
    ("i want to talk to a real person", "agent_request"),
    ("can i speak to an agent", "agent_request"),
    ("what's the weather like today", "out_of_scope"),
    ("cuéntame un chiste", "out_of_scope"),
    ("quién va a ganar el partido del domingo", "out_of_scope"),
    ("sorry i think i called the wrong number", "out_of_scope"),
    ("do you know a good pizza place nearby", "out_of_scope"),
    ("cuál es la capital de italia", "out_of_scope"),
]


@pytest.fixture(scope="module")
def examples():
    return load_examples(bundled_data_paths(), taxonomy=INTENTS)


@pytest.fixture(scope="module")
def trained(examples):
    return train(examples, seed=0)


@pytest.fixture(scope="module")
def model(trained):
    return trained.to_intent_model()


def test_canonical_phrases_are_not_training_lines(examples):
    training = {normalize(e.text) for e in examples}
    assert [t for t, _ in CANONICAL if normalize(t) in training] == []


def test_every_intent_has_canonical_phrases_in_both_languages():
    assert {intent for _, intent in CANONICAL} == set(INTENTS)


@pytest.mark.parametrize("text,intent", CANONICAL)
def test_canonical_phrases_get_the_right_intent(model, text, intent):
    result = model.parse(text)
    assert result.intent == intent, result.ranking[:3]


def test_held_out_accuracy_and_macro_f1_are_reported_and_high(trained):
    metrics = trained.metrics
    assert metrics["n_holdout"] >= 400
    assert metrics["accuracy"] >= 0.88 and metrics["macro_f1"] >= 0.88
    for language in ("es", "en"):
        assert metrics["per_language"][language]["accuracy"] >= 0.85


def test_threshold_is_tuned_on_held_out_data(trained):
    assert 0.0 <= trained.threshold <= 0.8
    assert trained.metadata["threshold"] == trained.threshold
    assert len(trained.metrics["threshold_curve"]) > 10


def test_metadata_records_provenance(trained, examples):
    md = trained.metadata
    assert md["format_version"] == FORMAT_VERSION and md["seed"] == 0 and md["code_version"]
    assert len(md["data_hash"]) == 64
    assert md["n_examples"]["payment"]["es"] >= 40
    assert md["training_seconds"] < 30


def test_training_twice_with_one_seed_gives_identical_weights(trained, examples):
    again = train(list(reversed(examples)), seed=0)  # input order must not matter either
    assert again.labels == trained.labels
    assert again.featurizer.vocabulary == trained.featurizer.vocabulary
    assert np.array_equal(again.featurizer.idf, trained.featurizer.idf)
    assert np.array_equal(again.coef, trained.coef)
    assert np.array_equal(again.intercept, trained.intercept)
    assert np.array_equal(again.embedding_coef, trained.embedding_coef)
    assert again.threshold == trained.threshold


def test_save_load_round_trip_gives_identical_predictions(trained, model, tmp_path):
    directory = save(trained, tmp_path / "model")
    assert sorted(p.name for p in directory.iterdir()) == ["labels.json", "metadata.json", "weights.npz"]
    assert json.loads((directory / "labels.json").read_text()) == list(trained.labels)
    loaded = IntentModel.load(directory)
    assert loaded.version == model.version and loaded.threshold == model.threshold
    for text, _ in CANONICAL + [("", ""), ("asdf qwerty", ""), ("hola", "")]:
        assert loaded.parse(text) == model.parse(text)  # exact floats
        assert np.array_equal(loaded.probabilities(text), model.probabilities(text))
    # No pickles anywhere: every array loads with allow_pickle=False.
    with np.load(directory / "weights.npz", allow_pickle=False) as npz:
        assert {"vocabulary", "idf", "coef", "intercept", "embedding_coef"} <= set(npz.files)
