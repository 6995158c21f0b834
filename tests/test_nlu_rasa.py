"""RasaClassifier against real local HTTP servers: a Rasa-like one, a slow one, a broken one."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nlu.classifier import IntentClassifier, IntentResult, IntentScore
from nlu.rasa_backend import RasaClassifier


class Fallback:
    version = "local-1"

    def parse(self, text: str) -> IntentResult:
        return IntentResult(text, "agent_request", 0.5, (IntentScore("agent_request", 0.5),))


def serve(answer):
    """Start a real HTTP server whose POST handler is ``answer(handler, body) -> (status, bytes)``."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self.server.requests.append((self.path, body))
            status, payload = answer(self, body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.requests = []
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def rasa_like(handler, body):
    return 200, json.dumps({
        "text": body["text"],
        "intent": {"name": "payment", "confidence": 0.91},
        "entities": [],
        "intent_ranking": [{"name": "payment", "confidence": 0.91}, {"name": "billing_dispute", "confidence": 0.06}],
    }).encode()


@pytest.fixture
def server_factory():
    servers = []

    def make(answer):
        s = serve(answer)
        servers.append(s)
        return f"http://127.0.0.1:{s.server_address[1]}", s

    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


def test_answers_from_rasa_in_the_same_shape(server_factory):
    url, server = server_factory(rasa_like)
    rasa = RasaClassifier(url, Fallback(), timeout_s=2.0)
    assert isinstance(rasa, IntentClassifier) and rasa.version == f"rasa:{url}"
    result, source = rasa.parse_with_source("quiero pagar")
    assert source == "rasa" and rasa.last_fallback_reason is None
    assert (result.intent, result.confidence) == ("payment", 0.91)
    assert result.ranking == (IntentScore("payment", 0.91), IntentScore("billing_dispute", 0.06))
    assert result.to_rasa()["intent_ranking"][1] == {"name": "billing_dispute", "confidence": 0.06}
    assert server.requests == [("/model/parse", {"text": "quiero pagar"})]
    rasa.close()


def test_timeout_falls_back_to_the_embedded_model(server_factory):
    def slow(handler, body):
        time.sleep(1.0)
        return rasa_like(handler, body)

    url, _ = server_factory(slow)
    rasa = RasaClassifier(url, Fallback(), timeout_s=0.2)
    started = time.perf_counter()
    result, source = rasa.parse_with_source("quiero pagar")
    assert time.perf_counter() - started < 0.9
    assert source == "fallback:timeout" and rasa.last_fallback_reason == "timeout"
    assert result.intent == "agent_request" and rasa.fallbacks == 1


@pytest.mark.parametrize("status,payload,reason", [
    (500, b'{"error": "boom"}', "http_500"),
    (200, b"not json", "malformed answer"),
    (200, b'{"intent": {"name": "payment"}}', "malformed answer"),
    (200, b'{"text": "x"}', "malformed answer"),
])
def test_errors_and_malformed_answers_fall_back(server_factory, status, payload, reason):
    url, _ = server_factory(lambda h, b: (status, payload))
    result, source = RasaClassifier(url, Fallback(), timeout_s=2.0).parse_with_source("hola")
    assert source.startswith(f"fallback:{reason}") and result.intent == "agent_request"


def test_unreachable_server_falls_back():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result, source = RasaClassifier(f"http://127.0.0.1:{port}", Fallback(), timeout_s=1.0).parse_with_source("x")
    assert source.startswith("fallback:unreachable") and result.intent == "agent_request"


def test_bad_url_is_refused():
    with pytest.raises(ValueError, match="http"):
        RasaClassifier("localhost:5005", Fallback())
