"""``nlu.backend: rasa``: a real gateway process classifies through a real Rasa-compatible server,
falls back to its embedded model when that server is down, and reloads the fallback behind it."""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import ThreadingHTTPServer

import httpx
import pytest
from test_nlu_rasa import serve

from gateway.dev.harness import start_gateway
from nlu.bundled import bundled_data_paths
from nlu.dataset import load_examples
from nlu.model import IntentModel
from nlu.train import save, train

pytestmark = [pytest.mark.sip, pytest.mark.asr]

TOKEN = "s3cret"
# Not what the embedded model says for the words sent as Rasa-answered: such an answer came through Rasa.
RASA_INTENT, RASA_CONFIDENCE = "fraud_or_loss", 0.987


def rasa_answer(handler, body):
    return 200, json.dumps({
        "text": body["text"],
        "intent": {"name": RASA_INTENT, "confidence": RASA_CONFIDENCE},
        "entities": [],
        "intent_ranking": [{"name": RASA_INTENT, "confidence": RASA_CONFIDENCE}, {"name": "payment", "confidence": 0.01}],
    }).encode()


class RasaServer:
    """A Rasa-compatible HTTP server on a fixed port that a test can take down and bring back."""

    def __init__(self) -> None:
        self.server = serve(rasa_answer)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    @contextmanager
    def down(self):
        """Nothing listens on the port (connections are refused) until the block ends."""
        handler = self.server.RequestHandlerClass
        self.close()
        try:
            yield
        finally:
            self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
            self.server.requests, self.server.daemon_threads = [], True
            threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def rasa():
    server = RasaServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory, rasa):
    # A generous timeout: a loaded test machine must not turn Rasa's answers into fallbacks.
    gateway = start_gateway(
        tmp_path_factory.mktemp("rasa"), nlu={"backend": "rasa", "rasa_url": rasa.url, "rasa_timeout_s": 5.0, "rasa_token": TOKEN},
    )
    yield gateway
    gateway.stop()


def parse(gateway, text: str) -> dict:
    return httpx.post(gateway.api + "/v1/nlu/parse", json={"text": text}, timeout=30).raise_for_status().json()


def test_the_gateway_classifies_through_rasa(running, rasa):
    assert running.get("/healthz")["nlu"]["version"] == f"rasa:{rasa.url}"
    answer = parse(running, "quiero pagar mi factura")
    assert answer["intent"] == {"name": RASA_INTENT, "confidence": RASA_CONFIDENCE}
    assert answer["intent_ranking"][1] == {"name": "payment", "confidence": 0.01}
    assert rasa.server.requests[-1] == (f"/model/parse?token={TOKEN}", {"text": "quiero pagar mi factura"})
    assert TOKEN not in json.dumps(running.get("/healthz"))


def test_when_rasa_is_down_the_embedded_model_answers_and_rasa_takes_over_again(running, rasa):
    with rasa.down():
        assert parse(running, "where is my order")["intent"]["name"] == "order_status"
    assert parse(running, "where is my order")["intent"]["name"] == RASA_INTENT


def test_reload_replaces_the_fallback_behind_rasa(running, rasa, tmp_path):
    model_dir = save(train(load_examples(bundled_data_paths()), seed=11), tmp_path / "model-v2")
    reloaded = IntentModel.load(model_dir)

    answer = httpx.post(running.api + "/v1/nlu/reload", json={"model": str(model_dir)}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == reloaded.version  # the fallback's versions, not Rasa's
    assert answer.json()["previous_version"] not in (reloaded.version, f"rasa:{rasa.url}")

    assert running.get("/healthz")["nlu"]["version"] == f"rasa:{rasa.url}"  # Rasa still answers first
    assert parse(running, "quiero pagar mi factura")["intent"]["name"] == RASA_INTENT
    with rasa.down():
        assert parse(running, "me robaron la tarjeta") == reloaded.parse("me robaron la tarjeta").to_rasa()
