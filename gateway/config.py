"""Gateway configuration: one YAML file, then environment variables, then CLI flags.

Every setting has a documented default, so ``puente serve`` runs with no file at
all. Environment variables use the prefix ``PUENTE_`` and ``__`` between levels:
``PUENTE_SIP__PORT=5070``, ``PUENTE_DATABASE__URL=postgresql+psycopg://…``,
``PUENTE_ROUTING__AGENT_URI=sip:agents@pbx.example``. Values are parsed as YAML
scalars, so ``PUENTE_ASR__LANGUAGES='[es, en]'`` works too.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nlu.taxonomy import INTENTS

ENV_PREFIX = "PUENTE_"
Route = Literal["whatsapp", "voice"]
Language = Literal["es", "en"]


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SipSettings(_Section):
    host: str = Field("127.0.0.1", description="Address SIP and RTP bind to.")
    port: int = Field(5060, ge=1, le=65535, description="SIP port (UDP and TCP).")
    transports: list[Literal["udp", "tcp"]] = ["udp", "tcp"]
    public_host: str | None = Field(None, description="Address advertised in Contact/SDP; default: host.")
    allowed_networks: list[str] = Field(
        ["127.0.0.0/8", "::1/128"], description="Source networks whose INVITEs are answered; others get 403."
    )
    codecs: list[str] = ["opus/48000", "G722/16000", "PCMU/8000", "PCMA/8000"]
    rtp_port: int = Field(40000, ge=1024, le=65000)
    max_calls: int = Field(32, ge=1)
    log_level: int = Field(0, ge=0, le=6, description="pjsua2 log verbosity.")


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)


class DatabaseSettings(_Section):
    url: str = Field("sqlite:///var/puente.db", description="SQLAlchemy URL; relative SQLite paths are relative to the working directory.")


class AsrSettings(_Section):
    model: str = Field("base", description='"base" (bundled multilingual), "tiny.en", or a CTranslate2 Whisper directory.')
    compute_type: str = "int8"
    cpu_threads: int = Field(0, ge=0, description="0 = let CTranslate2 decide.")
    workers: int = Field(1, ge=1, description="Utterances transcribed at once (one shared model).")
    cache_dir: Path = Field(Path("~/.cache/puente"), description="Where the bundled model is assembled once.")


class EndpointingSettings(_Section):
    end_silence_ms: int = Field(600, ge=100, description="Trailing silence that ends an utterance.")
    no_input_ms: int = Field(5000, ge=500, description="Silence after a prompt before the no-input path.")
    max_utterance_ms: int = Field(15000, ge=1000)
    vad_aggressiveness: int = Field(2, ge=0, le=3)


class NluSettings(_Section):
    model: Path | None = Field(None, description="Model directory; default: trained once from the bundled data.")


class LineSettings(_Section):
    """A dialled extension (the user part of the request URI) and the languages spoken on it."""

    languages: list[Language] = ["es", "en"]

    @field_validator("languages")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a line needs at least one language")
        return value


class RoutingSettings(_Section):
    routes: dict[str, Route] = Field(
        default_factory=lambda: {
            **{intent: "voice" for intent in INTENTS},
            **{
                intent: "whatsapp"
                for intent in (
                    "order_status", "appointment", "duplicate_document", "opening_hours",
                    "policy_info", "payment", "send_documents", "update_details",
                )
            },
        },
        description="Intent → channel. Intents left out go to voice.",
    )
    min_confidence: float = Field(0.5, ge=0.0, le=1.0, description="Below this the caller is reprompted.")
    max_reprompts: int = Field(1, ge=0, description="Reprompts on low confidence before voice.")
    max_no_input: int = Field(2, ge=0, description="Prompts after silence (no-input, then reprompt) before voice.")
    agent_uri: str | None = Field(None, description="SIP URI voice calls are transferred to (REFER); none: hold.")
    hold_timeout_s: float = Field(60.0, gt=0, description="With no agent URI, how long the caller holds before goodbye.")

    @field_validator("routes")
    @classmethod
    def _known_intents(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(INTENTS))
        if unknown:
            raise ValueError(f"unknown intents {unknown}; the taxonomy is {list(INTENTS)}")
        return value


class WhatsAppSettings(_Section):
    default_region: str = Field("MX", description="Region for caller numbers without a country code.")
    template: str = Field("call_followup", description="Template of the first message after a deflection.")


class Settings(_Section):
    sip: SipSettings = SipSettings()
    http: HttpSettings = HttpSettings()
    database: DatabaseSettings = DatabaseSettings()
    asr: AsrSettings = AsrSettings()
    endpointing: EndpointingSettings = EndpointingSettings()
    nlu: NluSettings = NluSettings()
    routing: RoutingSettings = RoutingSettings()
    lines: dict[str, LineSettings] = Field(
        default_factory=lambda: {
            "default": LineSettings(languages=["es", "en"]),
            "es": LineSettings(languages=["es"]),
            "en": LineSettings(languages=["en"]),
        },
        description='Extension → languages; "default" serves any other extension.',
    )
    whatsapp: WhatsAppSettings = WhatsAppSettings()
    prompts_dir: Path | None = Field(None, description="Directory of <lang>/<prompt>.wav; default: the bundled prompts.")

    def line(self, extension: str) -> LineSettings:
        return self.lines.get(extension) or self.lines.get("default") or LineSettings()


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the YAML file, then ``PUENTE_*`` variables, then ``overrides`` (dotted keys)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    env = os.environ if environ is None else environ
    for key, raw in env.items():
        if key.startswith(ENV_PREFIX) and "__" in key:
            dotted = key[len(ENV_PREFIX):].lower().replace("__", ".")
            _set_dotted(data, dotted, yaml.safe_load(raw) if raw else raw)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, dotted, value)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"setting {dotted!r}: {part!r} is not a section")
        node = child
    node[leaf] = value
