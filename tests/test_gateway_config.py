"""Configuration: YAML, then PUENTE_* environment variables, then flags; clear errors."""
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings


def test_defaults_run_one_machine_out_of_the_box():
    s = load_settings(environ={})
    assert (s.sip.host, s.sip.port, s.http.port) == ("127.0.0.1", 5060, 8080)
    assert s.database.url.startswith("sqlite:///")
    assert s.asr.model == "base"
    assert s.endpointing.end_silence_ms == 600
    assert s.routing.routes["order_status"] == "whatsapp" and s.routing.routes["complaint"] == "voice"
    assert s.line("es").languages == ["es"] and s.line("anything").languages == ["es", "en"]


def test_environment_overrides_file_and_flags_override_environment(tmp_path: Path):
    cfg = tmp_path / "puente.yaml"
    cfg.write_text("sip:\n  port: 5070\nhttp:\n  port: 9000\nrouting:\n  agent_uri: sip:agents@pbx\n")
    s = load_settings(cfg, environ={"PUENTE_SIP__PORT": "5080"}, overrides={"http.port": 9100})
    assert s.sip.port == 5080
    assert s.http.port == 9100
    assert s.routing.agent_uri == "sip:agents@pbx"


def test_environment_values_are_yaml_scalars():
    s = load_settings(environ={"PUENTE_LINES__DEFAULT__LANGUAGES": "[en]", "PUENTE_ROUTING__MIN_CONFIDENCE": "0.7"})
    assert s.line("x").languages == ["en"]
    assert s.routing.min_confidence == 0.7


@pytest.mark.parametrize(
    "yaml_text, complaint",
    [
        ("routing:\n  routes:\n    pizza_order: whatsapp\n", "pizza_order"),
        ("routing:\n  routes:\n    order_status: fax\n", "routing.routes.order_status"),
        ("sip:\n  port: 99999\n", "sip.port"),
        ("sip:\n  prot: 5060\n", "sip.prot"),
        ("lines:\n  es:\n    languages: [fr]\n", "lines.es.languages"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(tmp_path: Path, yaml_text, complaint):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError, match=complaint.replace(".", r"\.")):
        load_settings(cfg, environ={})


def test_unreadable_or_malformed_files_are_clear_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("sip: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, environ={})
