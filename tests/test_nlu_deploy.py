"""Rolling out a new intent model on a running gateway, without a restart."""
from __future__ import annotations

import httpx
import pytest
from conftest import espeak

from gateway.dev.harness import start_gateway
from nlu.bundled import bundled_data_paths
from nlu.dataset import load_examples
from nlu.train import save, train

pytestmark = [pytest.mark.sip, pytest.mark.asr]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    gateway = start_gateway(tmp_path_factory.mktemp("deploy"))
    yield gateway
    gateway.stop()


def reload(gateway, model_dir) -> httpx.Response:
    return httpx.post(gateway.api + "/v1/nlu/reload", json={"model": str(model_dir)}, timeout=30)


def test_a_new_model_serves_the_next_call_and_its_version_is_reported(running, tmp_path):
    before = running.get("/healthz")["nlu"]["version"]
    model_dir = save(train(load_examples(bundled_data_paths()), seed=7), tmp_path / "model-v2")

    answer = reload(running, model_dir)
    assert answer.status_code == 200, answer.text
    new_version = answer.json()["version"]
    assert answer.json()["previous_version"] == before and new_version != before
    assert running.get("/healthz")["nlu"]["version"] == new_version

    record = running.call("es", "--wav", str(espeak("necesito pagar mi factura", "es", tmp_path / "pago.wav")), "--dtmf", "1")
    assert record["record"]["decisions"][0]["nlu_version"] == new_version


@pytest.mark.parametrize("damage", ["empty", "garbage", "missing"])
def test_a_broken_model_is_refused_and_the_running_one_keeps_serving(running, tmp_path, damage):
    before = running.get("/healthz")["nlu"]["version"]
    broken = tmp_path / "broken"
    if damage != "missing":
        broken.mkdir()
    if damage == "garbage":
        for name in ("weights.npz", "labels.json", "metadata.json"):
            (broken / name).write_bytes(b"\x00not a model")

    answer = reload(running, broken)
    assert answer.status_code == 422
    assert "cannot load intent model" in answer.json()["detail"]
    assert running.get("/healthz")["nlu"]["version"] == before
    parsed = httpx.post(running.api + "/v1/nlu/parse", json={"text": "where is my order"}, timeout=10).json()
    assert parsed["intent"]["name"] == "order_status"


def test_puente_nlu_deploy_switches_the_model_and_refuses_a_broken_one(running, tmp_path):
    import json
    import subprocess
    import sys

    model_dir = save(train(load_examples(bundled_data_paths()), seed=3), tmp_path / "model-v3")
    deploy = [sys.executable, "-m", "gateway.cli", "nlu", "deploy", "--api", running.api]
    ok = subprocess.run([*deploy, str(model_dir)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["version"] == running.get("/healthz")["nlu"]["version"]

    refused = subprocess.run([*deploy, str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "cannot load intent model" in refused.stderr
