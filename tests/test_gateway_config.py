"""Configuration: YAML, then PUENTE_* environment variables, then flags; clear errors."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from gateway.config import ConfigError, Settings, load_settings
from models.endpointing import EndpointerConfig
from models.transcribe import TranscriberConfig
from sip.config import SipConfig
from sip.registrar import RegistrarConfig


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


# Every field of each part's dataclass, set from the YAML to a value that is not its default:
# part field -> (YAML path, YAML value, the value the part should get).
PART_OPTIONS = {
    SipConfig: {
        "host": ("sip.host", "127.0.0.2", "127.0.0.2"),
        "port": ("sip.port", 5071, 5071),
        "transports": ("sip.transports", ["tcp", "tls"], ("tcp", "tls")),
        "public_host": ("sip.public_host", "pbx.example", "pbx.example"),
        "tls_port": ("sip.tls_port", 5062, 5062),
        "tls_cert_file": ("sip.tls_cert_file", "~/certs/sip.pem", Path.home() / "certs" / "sip.pem"),
        "tls_key_file": ("sip.tls_key_file", "/etc/puente/sip.key", Path("/etc/puente/sip.key")),
        "tls_ca_file": ("sip.tls_ca_file", "/etc/puente/clients-ca.pem", Path("/etc/puente/clients-ca.pem")),
        "srtp": ("sip.srtp", "mandatory", "mandatory"),
        "srtp_require_tls": ("sip.srtp_require_tls", False, False),
        "allowed_networks": ("sip.allowed_networks", ["10.0.0.0/8"], ("10.0.0.0/8",)),
        "trusted_networks": ("sip.trusted_networks", ["192.0.2.0/24"], ("192.0.2.0/24",)),
        "max_calls_per_source": ("sip.max_calls_per_source", 2, 2),
        "invite_rate_per_source": ("sip.invite_rate_per_source", 0.5, 0.5),
        "invite_burst_per_source": ("sip.invite_burst_per_source", 3, 3),
        "ack_timeout_s": ("sip.ack_timeout_s", 4.0, 4.0),
        "codecs": ("sip.codecs", ["PCMU/8000"], ("PCMU/8000",)),
        "rtp_port": ("sip.rtp_port", 30000, 30000),
        "rtp_port_range": ("sip.rtp_port_range", 100, 100),
        "max_calls": ("sip.max_calls", 4, 4),
        "user_agent": ("sip.user_agent", "Puente-Test", "Puente-Test"),
        "log_level": ("sip.log_level", 3, 3),
        "media_quality": ("sip.media_quality", 8, 8),
    },
    EndpointerConfig: {
        "speech_start_ms": ("endpointing.speech_start_ms", 60, 60),
        "speech_start_ratio": ("endpointing.speech_start_ratio", 0.5, 0.5),
        "end_silence_ms": ("endpointing.end_silence_ms", 400, 400),
        "early_silence_ms": ("endpointing.early_silence_ms", 200, 200),
        "max_utterance_ms": ("endpointing.max_utterance_ms", 9000, 9000),
        "no_input_ms": ("endpointing.no_input_ms", 3000, 3000),
        "pre_roll_ms": ("endpointing.pre_roll_ms", 100, 100),
        "tail_ms": ("endpointing.tail_ms", 50, 50),
    },
    TranscriberConfig: {
        "model": ("asr.model", "tiny.en", "tiny.en"),
        "cache_dir": ("asr.cache_dir", "~/puente-models", Path.home() / "puente-models"),
        "device": ("asr.device", "cuda", "cuda"),
        "compute_type": ("asr.compute_type", "float16", "float16"),
        "cpu_threads": ("asr.cpu_threads", 2, 2),
        "num_workers": ("asr.workers", 3, 3),
        "beam_size": ("asr.beam_size", 5, 5),
        "languages": ("lines", {"default": {"languages": ["en"]}}, ("en",)),
        "window_padding_s": ("asr.window_padding_s", 0.5, 0.5),
        "no_speech_threshold": ("asr.no_speech_threshold", 0.5, 0.5),
        "logprob_threshold": ("asr.logprob_threshold", -0.8, -0.8),
        "min_avg_logprob": ("asr.min_avg_logprob", -1.2, -1.2),
        "max_tokens_per_second": ("asr.max_tokens_per_second", 12.0, 12.0),
        "max_tokens_base": ("asr.max_tokens_base", 5, 5),
        "min_speech_ms": ("asr.min_speech_ms", 200, 200),
    },
    RegistrarConfig: {
        "host": ("registrar.host", "127.0.0.3", "127.0.0.3"),
        "port": ("registrar.port", 5080, 5080),
        "realm": ("registrar.realm", "agents.example", "agents.example"),
        "min_expires_s": ("registrar.min_expires_s", 30, 30),
        "max_expires_s": ("registrar.max_expires_s", 7200, 7200),
        "default_expires_s": ("registrar.default_expires_s", 300, 300),
        "nonce_ttl_s": ("registrar.nonce_ttl_s", 120, 120),
        "digest_algorithms": ("registrar.digest_algorithms", ["SHA-256", "MD5"], ("SHA-256", "MD5")),
    },
}
DERIVE = {SipConfig: Settings.sip_config, EndpointerConfig: Settings.endpointer_config, TranscriberConfig: Settings.transcriber_config,
          RegistrarConfig: Settings.registrar_config}


@pytest.mark.parametrize("part", PART_OPTIONS, ids=lambda part: part.__name__)
def test_every_option_of_a_part_is_reachable_from_the_yaml_file(tmp_path: Path, part):
    options = PART_OPTIONS[part]
    assert set(options) == {f.name for f in dataclasses.fields(part)}, "a part option has no setting (or this table is stale)"
    document: dict = {}
    for yaml_path, value, _ in options.values():
        *sections, key = yaml_path.split(".")
        node = document
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = value
    cfg = tmp_path / "puente.yaml"
    cfg.write_text(yaml.safe_dump(document))

    derived, default = DERIVE[part](load_settings(cfg, environ={})), part()
    for name, (_, _, expected) in options.items():
        assert getattr(default, name) != expected, f"{name}: pick a value that is not the default"
        assert getattr(derived, name) == expected, name


def test_default_settings_derive_the_parts_own_defaults(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # both sides read it when made
    settings = load_settings(environ={})
    for part, derive in DERIVE.items():
        assert derive(settings) == part(), part.__name__
    assert settings.asr.cache_dir == tmp_path / "puente" / "models"
    assert settings.nlu.cache_dir == tmp_path / "puente" / "nlu"  # its own, beside the ASR's


def test_environment_reaches_part_options_and_tildes_expand():
    s = load_settings(environ={"PUENTE_SIP__RTP_PORT_RANGE": "64", "PUENTE_NLU__CACHE_DIR": "~/nlu-cache"})
    assert s.sip_config().rtp_port_range == 64
    assert s.nlu.cache_dir == Path.home() / "nlu-cache"


@pytest.mark.parametrize(
    "overrides, complaint",
    [
        # The parts' own checks, reported at load and naming the section.
        ({"sip.allowed_networks": ["10.0.0.0/33"]}, "sip: SipConfig.allowed_networks"),
        ({"sip.transports": ["udp", "tls"]}, "sip: SipConfig.transports has 'tls': set tls_cert_file"),
        ({"sip.srtp": "optional"}, "sip: SipConfig.srtp is 'optional' with srtp_require_tls"),
        ({"sip.srtp": "always"}, "sip.srtp"),
        ({"sip.transports": ["tcp", "tls"], "sip.tls_cert_file": "c.pem", "sip.tls_key_file": "k.pem", "sip.tls_port": 5060},
         "sip: SipConfig.tls_port 5060 is also the TCP port"),
        ({"endpointing.speech_start_ms": 2000, "endpointing.max_utterance_ms": 1500}, "endpointing: max_utterance_ms"),
        ({"nlu.backend": "rasa"}, "nlu: .*backend rasa needs rasa_url"),
        ({"nlu.backend": "rasa", "nlu.rasa_url": "rasa.local:5005"}, "nlu.rasa_url"),
        ({"nlu.backend": "spacy"}, "nlu.backend"),
    ],
)
def test_values_a_part_refuses_are_configuration_errors(overrides, complaint):
    with pytest.raises(ConfigError, match=complaint):
        load_settings(environ={}, overrides=overrides)


def test_rasa_backend_settings():
    s = load_settings(environ={"PUENTE_NLU__RASA_TOKEN": "s3cret"}, overrides={"nlu.backend": "rasa", "nlu.rasa_url": "http://rasa:5005"})
    assert (s.nlu.backend, s.nlu.rasa_url, s.nlu.rasa_timeout_s) == ("rasa", "http://rasa:5005", 0.5)
    assert s.nlu.rasa_token.get_secret_value() == "s3cret" and "s3cret" not in repr(s)
    assert load_settings(environ={}).nlu.backend == "embedded"


def test_the_readme_documents_the_defaults(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)  # the README shows the usual ~/.cache
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Configuration", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    cfg = tmp_path / "readme.yaml"
    cfg.write_text(block)
    assert load_settings(cfg, environ={}).model_dump() == load_settings(environ={}).model_dump()


def test_biasing_prompts_come_from_the_deployment_vocabulary():
    default = load_settings(environ={}).asr.biasing.prompts()
    assert set(default) == {"es", "en"} and "póliza" in default["es"] and "policy" in default["en"]
    insurer = load_settings(environ={}, overrides={"asr.biasing.vocabulary": {"es": ["póliza", "siniestro", "deducible"]}})
    assert insurer.asr.biasing.prompts() == {"es": "póliza, siniestro, deducible."}
    assert load_settings(environ={"PUENTE_ASR__BIASING__ENABLED": "false"}).asr.biasing.prompts() == {}
