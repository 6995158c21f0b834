"""Gateway configuration: one YAML file, then environment variables, then CLI flags.

Every setting has a documented default, so ``puente serve`` runs with no file at
all. Environment variables use the prefix ``PUENTE_`` and ``__`` between levels:
``PUENTE_SIP__PORT=5070``, ``PUENTE_DATABASE__URL=postgresql+psycopg://…``,
``PUENTE_ROUTING__AGENT_URI=sip:agents@pbx.example``. Values are parsed as YAML
scalars, so ``PUENTE_ASR__LANGUAGES='[es, en]'`` works too.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from gateway.flows.settings import FlowSettings
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


class WhatsAppButton(_Section):
    """A quick-reply button of a template: ``id`` comes back in the reply's payload."""

    id: str = Field(..., min_length=1, max_length=64)
    text: str = Field(..., min_length=1, max_length=25)


class WhatsAppTemplate(_Section):
    """An approved message template, as registered in WhatsApp Manager (the sandbox validates against it)."""

    name: str = Field(..., pattern=r"^[a-z0-9_]{1,512}$")
    language: str = Field(..., description='Template language code as approved: "es", "es_MX", "en_US"…')
    body: str = Field(..., description="Body text with positional parameters {{1}}, {{2}}…")
    buttons: list[WhatsAppButton] = Field(default_factory=list, max_length=10)

    @property
    def body_parameters(self) -> int:
        return len(set(_PLACEHOLDER.findall(self.body)))

    @model_validator(mode="after")
    def _placeholders_are_positional(self) -> "WhatsAppTemplate":
        found = sorted({int(n) for n in _PLACEHOLDER.findall(self.body)})
        if found != list(range(1, len(found) + 1)):
            raise ValueError(f"template {self.name}: body placeholders must be {{{{1}}}}..{{{{n}}}}, found {found}")
        return self


_PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")


def _default_templates() -> list[WhatsAppTemplate]:
    return [
        WhatsAppTemplate(
            name="call_followup", language="es",
            body='Hola, estábamos atendiendo tu llamada sobre {{1}}. Dijiste: "{{2}}". ¿Seguimos por aquí?',
            buttons=[WhatsAppButton(id="continue", text="Sí, sigamos"), WhatsAppButton(id="call_me", text="Prefiero llamada")],
        ),
        WhatsAppTemplate(
            name="call_followup", language="en",
            body='Hi, we were helping you on the phone with {{1}}. You said: "{{2}}". Shall we continue here?',
            buttons=[WhatsAppButton(id="continue", text="Yes, let's go on"), WhatsAppButton(id="call_me", text="Call me instead")],
        ),
    ]


def _default_intent_labels() -> dict[str, dict[str, str]]:
    return {
        "es": {
            "order_status": "el estado de tu pedido", "appointment": "tu cita", "duplicate_document": "un duplicado de tu documento",
            "opening_hours": "nuestros horarios", "policy_info": "tu póliza", "payment": "tu pago",
            "send_documents": "el envío de tus documentos", "update_details": "la actualización de tus datos",
        },
        "en": {
            "order_status": "your order status", "appointment": "your appointment", "duplicate_document": "a copy of your document",
            "opening_hours": "our opening hours", "policy_info": "your policy", "payment": "your payment",
            "send_documents": "sending your documents", "update_details": "updating your details",
        },
    }


class ConsentSettings(_Section):
    """WhatsApp requires the customer's opt-in before a business writes to them."""

    required: bool = Field(True, description="Ask on the call when the number has no consent on record; false: the operator's policy allows deflecting without asking.")
    on_no_answer: Literal["voice", "whatsapp"] = Field("voice", description="What a caller who does not answer the question gets.")
    silence_ms: int = Field(400, ge=100, description="Trailing silence that ends a yes/no answer (shorter than a sentence's).")
    no_input_ms: int = Field(4000, ge=500, description="How long to wait for the answer after the question.")


class WhatsAppSettings(_Section):
    """The WhatsApp channel. With no ``access_token`` the local sandbox plays the Cloud API.

    Secrets (``access_token``, ``app_secret``, ``verify_token``) are best given as
    ``PUENTE_WHATSAPP__ACCESS_TOKEN`` etc.; they are ``SecretStr`` so they never print.
    """

    default_region: str = Field("MX", description="Region for caller numbers without a country code.")
    consent: ConsentSettings = ConsentSettings()
    template: str = Field("call_followup", description="Template of the first message after a deflection.")
    base_url: str | None = Field(
        None, description="Cloud API base URL, e.g. https://graph.facebook.com; default: the sandbox on the gateway's HTTP server."
    )
    api_version: str = Field("v21.0", pattern=r"^v\d+\.\d+$")
    phone_number_id: str = Field("100000000000001", min_length=1, description="Business phone number ID (the sandbox's by default).")
    business_account_id: str = Field("100000000000002", min_length=1, description="WhatsApp Business Account ID (webhook entry id).")
    display_phone_number: str = Field("15550000001", description="The business number customers see (sandbox).")
    access_token: SecretStr | None = Field(None, description="System-user access token; none: use the sandbox.")
    app_secret: SecretStr | None = Field(None, description="App secret for X-Hub-Signature-256; sandbox: a random one per process.")
    verify_token: SecretStr | None = Field(None, description="Webhook verification token; none: GET verification is refused.")
    webhook_url: str | None = Field(None, description="Where the sandbox posts webhooks; default: this gateway's /webhooks/whatsapp.")
    messages_per_second: float = Field(20.0, gt=0, description="Our sending rate across all customers.")
    per_user_interval_s: float = Field(6.0, ge=0, description="Least time between two messages to the same customer.")
    max_attempts: int = Field(8, ge=1, description="Send attempts before a message is marked failed.")
    backoff_base_s: float = Field(1.0, gt=0, description="First retry delay; doubles each attempt, with jitter.")
    backoff_cap_s: float = Field(300.0, gt=0, description="Longest retry delay.")
    request_timeout_s: float = Field(10.0, gt=0, description="HTTP timeout of one Cloud API request.")
    lease_s: float = Field(60.0, gt=0, description="How long a claimed message is reserved for one sender; > request_timeout_s.")
    in_doubt_grace_s: float = Field(
        30.0, ge=0,
        description="After an attempt whose outcome is unknown (timeout, crash), wait this long for its status webhook before re-sending.",
    )
    poll_interval_s: float = Field(0.5, gt=0, description="How often the sender looks for due messages.")
    auth_pause_s: float = Field(60.0, gt=0, description="Pause after the token was refused (code 190) before trying again.")
    webhook_max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger webhook bodies are refused (413).")
    window_hours: float = Field(24.0, gt=0, description="Customer-service window opened by the customer's last message.")
    templates: list[WhatsAppTemplate] = Field(default_factory=_default_templates, description="Approved templates.")
    intent_labels: dict[str, dict[str, str]] = Field(
        default_factory=_default_intent_labels, description="language → intent → words used for {{1}} of the follow-up template."
    )

    @field_validator("phone_number_id", "business_account_id", "display_phone_number", "access_token", "app_secret", "verify_token", mode="before")
    @classmethod
    def _digits_are_text(cls, value: Any) -> Any:
        # Environment values are parsed as YAML, so an all-digit id or token arrives as an int.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _consistent(self) -> "WhatsAppSettings":
        if self.access_token is not None:
            missing = [n for n in ("app_secret", "verify_token", "base_url") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"with an access_token (real Cloud API) also set {', '.join(missing)}")
        if self.lease_s <= self.request_timeout_s:
            raise ValueError("lease_s must be longer than request_timeout_s")
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must be at least backoff_base_s")
        names = {t.name for t in self.templates}
        if self.template not in names:
            raise ValueError(f"template {self.template!r} is not in templates {sorted(names)}")
        return self

    @property
    def sandbox(self) -> bool:
        """No credentials: the local emulator answers instead of Meta's Cloud API."""
        return self.access_token is None


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
    flows: FlowSettings = FlowSettings()
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
