"""Gateway configuration: one YAML file, then environment variables, then CLI flags.

Every setting has a documented default, so ``puente serve`` runs with no file at
all. Environment variables use the prefix ``PUENTE_`` and ``__`` between levels:
``PUENTE_SIP__PORT=5070``, ``PUENTE_DATABASE__URL=postgresql+psycopg://…``,
``PUENTE_ROUTING__AGENT_URI=sip:agents@pbx.example``. Values are parsed as YAML
scalars, so ``PUENTE_LINES__DEFAULT__LANGUAGES='[es, en]'`` works too.

The ``sip``, ``endpointing`` and ``asr`` sections configure the parts' own frozen
dataclasses (:class:`~sip.config.SipConfig`, :class:`~models.endpointing.EndpointerConfig`,
:class:`~models.transcribe.TranscriberConfig`): one setting per dataclass field, under the
same name, with the dataclass's default. :class:`Settings` derives the dataclasses
(``sip_config``, ``endpointer_config``, ``transcriber_config``), and validating the settings
runs the parts' own checks, so a value a part refuses is a :class:`ConfigError` at load.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.queue.hours import OpenHours
from models import EndpointerConfig, TranscriberConfig
from models.biasing import biasing_prompt
from nlu import DEFAULT_RASA_TIMEOUT_S, INTENTS
from nlu import default_cache_dir as default_nlu_cache_dir
from sip import RegistrarConfig, SipConfig

ENV_PREFIX = "PUENTE_"
Route = Literal["whatsapp", "voice"]
Language = Literal["es", "en"]


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: A path setting; ``~`` is expanded, so YAML and environment values may use it.
ExpandedPath = Annotated[Path, AfterValidator(Path.expanduser)]


def _part_field(part: type, name: str, **constraints: Any) -> Any:
    """A settings ``Field`` for ``part``'s dataclass field ``name``, with that field's default.

    The default is read, never restated, so the YAML and the part alone cannot disagree; a
    ``default_factory`` (e.g. a cache dir from ``$XDG_CACHE_HOME``) stays one, run when the
    settings are made. The default is validated too: a part default that the setting's
    constraints refuse fails at import, not in production.
    """
    spec = {f.name: f for f in dataclasses.fields(part)}[name]
    if spec.default_factory is not dataclasses.MISSING:
        return Field(default_factory=spec.default_factory, validate_default=True, **constraints)
    return Field(spec.default, validate_default=True, **constraints)


class SipSettings(_Section):
    """The SIP edge: the fields of :class:`sip.config.SipConfig`, same names and defaults."""

    host: str = _part_field(SipConfig, "host", min_length=1, description="Address SIP and RTP bind to.")
    port: int = _part_field(SipConfig, "port", ge=1, le=65535, description="SIP port (UDP and TCP).")
    transports: tuple[Literal["udp", "tcp", "tls"], ...] = _part_field(
        SipConfig, "transports", min_length=1, description="Transports SIP listens on; tls needs tls_cert_file and tls_key_file."
    )
    public_host: str | None = _part_field(SipConfig, "public_host", description="Address advertised in Contact/SDP; default: host.")
    tls_port: int = _part_field(SipConfig, "tls_port", ge=1, le=65535, description="SIP over TLS port, with tls in transports.")
    tls_cert_file: ExpandedPath | None = _part_field(
        SipConfig, "tls_cert_file", description="PEM certificate (chain) the TLS listener presents."
    )
    tls_key_file: ExpandedPath | None = _part_field(SipConfig, "tls_key_file", description="PEM private key of tls_cert_file.")
    tls_ca_file: ExpandedPath | None = _part_field(
        SipConfig, "tls_ca_file", description="PEM CA bundle; set: TLS clients must present a certificate it signs (mutual TLS)."
    )
    srtp: Literal["off", "optional", "mandatory"] = _part_field(
        SipConfig, "srtp", description="Media encryption (SDES-SRTP): off, optional (when offered), mandatory (plain RTP gets 488)."
    )
    srtp_require_tls: bool = _part_field(
        SipConfig, "srtp_require_tls",
        description="SRTP keys only over TLS signalling: with srtp on, calls not over TLS get 406; false: SDES over UDP/TCP too.",
    )

    @field_validator("srtp", mode="before")
    @classmethod
    def _srtp_off_is_not_false(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    allowed_networks: tuple[str, ...] = _part_field(
        SipConfig, "allowed_networks", description="Source networks (CIDR) whose INVITEs are answered; others get 403."
    )
    trusted_networks: tuple[str, ...] = _part_field(
        SipConfig, "trusted_networks", description="Sources (CIDR: carrier trunks, SBC) exempt from the per-source limits below."
    )
    max_calls_per_source: int = _part_field(
        SipConfig, "max_calls_per_source", ge=0, description="Calls one untrusted source IP may hold at once; more get 486. 0: no cap."
    )
    invite_rate_per_source: float = _part_field(
        SipConfig, "invite_rate_per_source", ge=0, description="New INVITEs per second from one untrusted source IP; more get 503 with Retry-After. 0: no limit."
    )
    invite_burst_per_source: int = _part_field(
        SipConfig, "invite_burst_per_source", ge=1, description="INVITEs one untrusted source may send at once before invite_rate_per_source applies."
    )
    ack_timeout_s: float = _part_field(
        SipConfig, "ack_timeout_s", ge=0.5, le=32, description="pjsip transaction timeout: a 200 OK never ACKed gets a BYE after this and its call is freed by twice this; also bounds our own requests."
    )
    codecs: tuple[str, ...] = _part_field(
        SipConfig, "codecs", min_length=1, description="name/clock_rate codec ids in priority order; every other codec is disabled."
    )
    rtp_port: int = _part_field(SipConfig, "rtp_port", ge=1024, le=65000, description="First local RTP port.")
    rtp_port_range: int = _part_field(SipConfig, "rtp_port_range", ge=0, description="How many ports above rtp_port RTP may use.")
    max_calls: int = _part_field(SipConfig, "max_calls", ge=1, description="Calls held at once.")
    user_agent: str = _part_field(SipConfig, "user_agent", min_length=1, description="User-Agent/Server header of our SIP messages.")
    log_level: int = _part_field(SipConfig, "log_level", ge=0, le=6, description="pjsua2 log verbosity.")
    media_quality: int = _part_field(
        SipConfig, "media_quality", ge=1, le=10,
        description="pjmedia quality 1-10: 3-4 resample with the small filter (cheap: a held call's main cost), 5+ the large one.",
    )


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str | None = Field(
        None, pattern=r"^https?://", description="Where agents' desktops reach this API (X-Puente-Context-Url); default: its local address.",
    )


class DatabaseSettings(_Section):
    url: str = Field("sqlite:///var/puente.db", description="SQLAlchemy URL; relative SQLite paths are relative to the working directory.")


# The words callers of a general contact center use for their reasons (nlu/taxonomy.py), per
# language; a deployment replaces them with its own (a retailer's "pedido, paquete, envío", an
# insurer's "póliza, siniestro").
DEFAULT_VOCABULARY: dict[str, list[str]] = {
    "es": ["pedido", "paquete", "envío", "factura", "recibo", "cobro", "cargo", "reembolso", "cita", "horario",
           "sucursal", "póliza", "siniestro", "cobertura", "garantía", "tarjeta", "contraseña", "cuenta", "pago",
           "darme de baja", "reclamo", "asesor"],
    "en": ["order", "package", "delivery", "invoice", "receipt", "bill", "charge", "refund", "appointment",
           "opening hours", "branch", "policy", "claim", "coverage", "warranty", "card", "password", "account",
           "payment", "cancel", "complaint", "agent"],
}


class BiasingSettings(_Section):
    """Whisper is told the domain's words before it hears the reason for the call (models/biasing.py):
    in the second opinion on an unsure reading, and with ``first_pass`` in every first transcription."""

    enabled: bool = Field(True, description="Bias the second opinion on an unsure reason toward the vocabulary.")
    first_pass: bool = Field(
        False, description="Bias every first transcription too. Off: measured to raise WER on other speech "
        "(IVR recordings, es +3 to +4 pt) for no gain in intent accuracy on our held-out set (README, Benchmarks).",
    )
    vocabulary: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_VOCABULARY.items()},
        description="Per language code, the words and short phrases callers use for their reasons.",
    )

    def prompts(self) -> dict[str, str]:
        """Language → the text Whisper reads before the audio (none when disabled)."""
        return {lang: biasing_prompt(words) for lang, words in self.vocabulary.items()} if self.enabled else {}


class AsrSettings(_Section):
    """Whisper: the fields of :class:`models.transcribe.TranscriberConfig`, same names and defaults,
    except ``workers`` (its ``num_workers``) and ``languages``, which come from ``lines``; plus the
    gateway's own ``max_wait_s``, ``second_opinion`` and ``biasing``."""

    model: str = _part_field(
        TranscriberConfig, "model", min_length=1,
        description='"base" (bundled multilingual), "tiny.en", or a CTranslate2 Whisper directory.',
    )
    cache_dir: ExpandedPath = _part_field(
        TranscriberConfig, "cache_dir", description="Where the bundled model is assembled once ($XDG_CACHE_HOME/puente/models)."
    )
    device: str = _part_field(TranscriberConfig, "device", description='"cpu" or "cuda".')
    compute_type: str = _part_field(TranscriberConfig, "compute_type", description="CTranslate2 quantisation; int8 is fastest on CPU.")
    cpu_threads: int = _part_field(TranscriberConfig, "cpu_threads", ge=0, description="Threads per worker; 0: the cores divided among the workers.")
    # The YAML key predates the part's name for it (num_workers); transcriber_config maps it.
    workers: int = _part_field(TranscriberConfig, "num_workers", ge=1, description="Utterances transcribed at once (one shared model).")
    # The gateway's, not the transcriber's: how long a caller may wait for Whisper behind others.
    max_wait_s: float | None = Field(
        3.0, ge=0,
        description="An utterance that would wait longer than this for a free worker (at the recent time per utterance) "
        "is not queued: its call takes the voice route at once. null: no bound.",
    )
    beam_size: int = _part_field(TranscriberConfig, "beam_size", ge=1, description="1 (greedy) is ~2x cheaper than 5, as accurate on short utterances.")
    window_padding_s: float = _part_field(
        TranscriberConfig, "window_padding_s", ge=0, description="Silence appended after the utterance before encoding."
    )
    no_speech_threshold: float = _part_field(
        TranscriberConfig, "no_speech_threshold", ge=0, le=1,
        description="Text is dropped when the no-speech probability is above this and the average log-probability below logprob_threshold.",
    )
    logprob_threshold: float = _part_field(TranscriberConfig, "logprob_threshold", le=0, description="See no_speech_threshold.")
    min_avg_logprob: float = _part_field(
        TranscriberConfig, "min_avg_logprob", le=0, description="Text is dropped below this average log-probability, whatever the no-speech probability."
    )
    max_tokens_per_second: float = _part_field(
        TranscriberConfig, "max_tokens_per_second", gt=0, description="Generated tokens per second of audio, at most (stops runaway repetition)."
    )
    max_tokens_base: int = _part_field(TranscriberConfig, "max_tokens_base", ge=0, description="Tokens allowed on top of max_tokens_per_second.")
    min_speech_ms: int = _part_field(
        TranscriberConfig, "min_speech_ms", ge=0, description="Audio given without its speech end and with less voiced audio (per webrtcvad) is not decoded."
    )
    second_opinion: int = Field(
        3, ge=0, le=5,
        description="When the first reading of a reason is unsure (out of scope or under routing.min_confidence), Whisper "
        "decodes it again with this many hypotheses (a beam that wide) and they are classified together; 0: never.",
    )
    biasing: BiasingSettings = Field(default_factory=BiasingSettings)


#: Endpointing settings that are the call session's (early commit), not the endpointer's.
_SESSION_ENDPOINTING = {"vad_aggressiveness", "early_commit_silence_ms", "early_commit_min_confidence"}


class EndpointingSettings(_Section):
    """Where utterances start and end: the fields of :class:`models.endpointing.EndpointerConfig`,
    same names and defaults, plus the aggressiveness of the VAD the endpointer listens through."""

    speech_start_ms: int = _part_field(EndpointerConfig, "speech_start_ms", description="Window in which speech must dominate to start an utterance.")
    speech_start_ratio: float = _part_field(
        EndpointerConfig, "speech_start_ratio", gt=0, le=1, description="Share of voiced frames in that window that starts an utterance."
    )
    end_silence_ms: int = _part_field(EndpointerConfig, "end_silence_ms", ge=100, description="Trailing silence that ends an utterance.")
    early_silence_ms: int | None = _part_field(
        EndpointerConfig, "early_silence_ms", ge=0,
        description="Early commit: at this trailing silence the words so far are transcribed and classified while the "
        "endpointer keeps listening; a complete, confident request is decided then instead of at end_silence_ms. "
        "Shorter than end_silence_ms; null or 0: off. Not used on yes/no turns (their own silence_ms).",
    )
    early_commit_silence_ms: int = Field(
        460, ge=0,
        description="Early commit decides no sooner than this trailing silence, however fast the words were understood "
        "(transcription starts at early_silence_ms): pauses inside a sentence run to ~500 ms. At least early_silence_ms; "
        "at end_silence_ms or more nothing is committed early (the pause's transcript is still reused).",
    )
    early_commit_min_confidence: float = Field(
        0.8, ge=0.0, le=1.0,
        description="Early commit needs the intent model this sure (not out_of_scope, not a fallback), and the words must "
        "not end open (nlu.completeness: 'de', 'mi', 'and', 'the', a number…); otherwise the turn waits for end_silence_ms "
        "and reuses the transcript.",
    )
    max_utterance_ms: int = _part_field(EndpointerConfig, "max_utterance_ms", ge=1000, description="An utterance is cut at this length.")
    # An int, not the part's ``int | None``: the gateway's no-input path (routing.max_no_input) needs the event.
    no_input_ms: int = _part_field(EndpointerConfig, "no_input_ms", ge=500, description="Silence after a prompt before the no-input path.")
    pre_roll_ms: int = _part_field(EndpointerConfig, "pre_roll_ms", ge=0, description="Audio kept before the detected start (the VAD fires late).")
    tail_ms: int = _part_field(EndpointerConfig, "tail_ms", ge=0, description="Silence kept after the last voiced frame.")
    vad_aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad aggressiveness, 0 (least) to 3 (most eager to call audio non-speech).")


    @model_validator(mode="after")
    def _early_commit_between(self) -> "EndpointingSettings":
        if self.early_silence_ms and self.early_commit_silence_ms < self.early_silence_ms:
            raise ValueError(
                f"early_commit_silence_ms ({self.early_commit_silence_ms}) must not be shorter than early_silence_ms "
                f"({self.early_silence_ms}): nothing is understood before then"
            )
        return self


class NluSettings(_Section):
    """The intent classifier: the embedded model, or an existing Rasa server in front of it."""

    model: ExpandedPath | None = Field(None, description="Model directory; default: trained once from the bundled data.")
    cache_dir: ExpandedPath = Field(
        default_factory=default_nlu_cache_dir, description="Where the bundled model is trained once ($XDG_CACHE_HOME/puente/nlu)."
    )
    backend: Literal["embedded", "rasa"] = Field(
        "embedded", description="embedded: the model above answers; rasa: a Rasa server answers, the model when Rasa cannot."
    )
    rasa_url: str | None = Field(
        None, pattern=r"^https?://", description="Base URL of the Rasa server (POST {rasa_url}/model/parse); required with backend rasa."
    )
    rasa_timeout_s: float = Field(DEFAULT_RASA_TIMEOUT_S, gt=0, description="Wait for Rasa per utterance before the embedded model answers.")
    rasa_token: SecretStr | None = Field(None, description="Rasa's --auth-token, sent as ?token=; none: no auth.")

    @model_validator(mode="after")
    def _rasa_has_url(self) -> "NluSettings":
        if self.backend == "rasa" and self.rasa_url is None:
            raise ValueError("backend rasa needs rasa_url (e.g. http://rasa.local:5005)")
        return self


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
    agent_uri: str | None = Field(None, description="With no queues: SIP URI voice calls are transferred to (REFER); none: hold.")
    hold_timeout_s: float = Field(60.0, gt=0, description="With no queues and no agent URI, how long the caller holds before goodbye.")
    skills: dict[str, str] = Field(
        default_factory=dict, description="Intent → queue (skill) of its voice calls; intents left out wait in default_queue.",
    )
    default_queue: str | None = Field(None, description="The queue of voice calls whose intent names none; default: the first queue.")
    priorities: dict[str, int] = Field(
        default_factory=lambda: {"fraud_or_loss": 10},
        description="Intent → priority in its queue (higher is served first; default 0).",
    )
    documents_intents: list[str] = Field(
        default_factory=lambda: ["send_documents", "update_details"],
        description="Voice calls with these intents get a WhatsApp link for documents and photos while they wait.",
    )

    @field_validator("routes", "skills", "priorities", "documents_intents")
    @classmethod
    def _known_intents(cls, value: dict[str, object] | list[str]) -> dict[str, object] | list[str]:
        unknown = sorted(set(value) - set(INTENTS))
        if unknown:
            raise ValueError(f"unknown intents {unknown}; the taxonomy is {list(INTENTS)}")
        return value


class AgentSettings(_Section):
    """An agent's phone, one call at a time: at a fixed SIP URI, or wherever it registers (digest auth)."""

    id: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Names the agent in events and /v1/queues; the registration user.")
    uri: str | None = Field(None, pattern=r"^sips?:", description="Where the gateway calls the agent; none: where the agent registers.")
    password: SecretStr | None = Field(None, description="The agent's digest password to REGISTER as sip:<id>@<registrar>.")

    @model_validator(mode="after")
    def _reachable(self) -> "AgentSettings":
        if (self.uri is None) == (self.password is None):
            raise ValueError(f"agent {self.id}: give either uri (a fixed phone) or password (the phone registers)")
        return self


class RegistrarSettings(_Section):
    """Where agents' phones REGISTER (only listening when some agent has a password)."""

    host: str | None = Field(None, description="Bind address; default: sip.host.")
    port: int = _part_field(RegistrarConfig, "port", ge=1, le=65535, description="UDP port of the registrar (beside SIP's).")
    realm: str = _part_field(RegistrarConfig, "realm", min_length=1, description="Digest realm the phones authenticate in.")
    min_expires_s: int = _part_field(RegistrarConfig, "min_expires_s", ge=1, description="Shorter registrations are refused (423).")
    max_expires_s: int = _part_field(RegistrarConfig, "max_expires_s", ge=1, description="Longer ones are granted this long.")
    default_expires_s: int = _part_field(RegistrarConfig, "default_expires_s", ge=1, description="When a phone asks for none.")
    nonce_ttl_s: int = _part_field(RegistrarConfig, "nonce_ttl_s", ge=1, description="Older challenges are answered stale.")
    digest_algorithms: tuple[Literal["MD5", "SHA-256"], ...] = _part_field(
        RegistrarConfig, "digest_algorithms", min_length=1,
        description="Challenged for, in order; add SHA-256 (RFC 8760) once every phone takes it (baresip 1.0 does not).",
    )


class OfferSettings(_Section):
    """The WhatsApp offer to a caller whose wait passes the queue's SLA."""

    enabled: bool = Field(True, description="Offer WhatsApp to waiting callers; off: callers only wait.")
    max_offers: int = Field(2, ge=0, description="Offers to one caller at most (an ignored offer counts).")
    interval_s: float = Field(45.0, gt=0, description="Least time between two offers to one caller.")
    check_interval_s: float = Field(5.0, gt=0, description="How often a waiting caller's wait is compared with the SLA.")
    intents: list[str] | None = Field(None, description="Intents offered WhatsApp; none: every intent of the queue.")
    hours: list[str] = Field(
        default_factory=lambda: ["mon-sun 00:00-24:00"],
        description='When offers are made, in offer.timezone: "mon-fri 08:00-20:00", "sat 09:00-14:00"…',
    )
    timezone: str = Field("America/Mexico_City", description="IANA time zone of the hours.")
    holdout_share: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of callers never offered (drawn at random, recorded), to measure the offer's effect.",
    )
    silence_ms: int = Field(400, ge=100, description="Trailing silence that ends the yes/no answer to the offer.")
    no_input_ms: int = Field(4000, ge=500, description="How long to wait for the answer after the offer.")

    @field_validator("intents")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - set(INTENTS))
        if unknown:
            raise ValueError(f"unknown intents {unknown}; the taxonomy is {list(INTENTS)}")
        return value

    @model_validator(mode="after")
    def _hours_parse(self) -> "OfferSettings":
        OpenHours(self.hours, self.timezone)  # HoursError (a ValueError) names the bad line or zone
        return self


class RecoverySettings(_Section):
    """The WhatsApp message to a caller who hung up before being served."""

    enabled: bool = Field(True, description="Message callers who abandoned (with consent, or when consent is not required).")
    delay_s: float = Field(60.0, ge=0, description="Wait after the hang-up before the message is sent.")
    min_abandon_s: float = Field(10.0, ge=0, description="Callers who hung up sooner after stating their reason get nothing.")
    window_s: float = Field(86_400.0, gt=0, description="At most one recovery per number in this window.")


class QueueSettings(_Section):
    """A voice queue (one skill): its agents, its SLA, the WhatsApp offer and abandon recovery."""

    agents: list[AgentSettings] = Field(default_factory=list, description="The agents serving this queue.")
    connect: Literal["bridge", "refer"] = Field(
        "bridge", description="bridge: the gateway calls the agent and joins the two calls (B2BUA); refer: it transfers the "
                              "caller to the agent with SIP REFER, and the call leaves this node.",
    )
    refer_busy_s: float = Field(
        240.0, gt=0, description="With connect: refer, how long an agent counts as on the call after the transfer (the node no longer sees it).",
    )
    sla_s: float = Field(60.0, gt=0, description="Answer-time target: a longer estimated or actual wait triggers the offer.")
    ring_timeout_s: float = Field(15.0, gt=0, description="An agent who does not answer within this is skipped.")
    wrap_up_s: float = Field(10.0, ge=0, description="After a call, the agent's time before the next one.")
    max_wait_s: float = Field(900.0, gt=0, description="A caller still waiting after this hears goodbye (and is recovered).")
    default_handle_time_s: float = Field(240.0, gt=0, description="Mean handle time assumed until enough calls were handled.")
    default_patience_s: float = Field(180.0, gt=0, description="Mean patience assumed until enough callers abandoned.")
    announce_interval_s: float | None = Field(
        None, gt=0, description="How often a waiting caller hears their place and expected wait; none: only hold music.",
    )
    announce: Literal["position", "wait", "both"] = Field("both", description="What the announcements say.")
    offer: OfferSettings = OfferSettings()
    recovery: RecoverySettings = RecoverySettings()

    @model_validator(mode="after")
    def _unique_agents(self) -> "QueueSettings":
        ids = [a.id for a in self.agents]
        if len(ids) != len(set(ids)):
            raise ValueError(f"agent ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
        return self


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
        WhatsAppTemplate(
            name="call_recovery", language="es",
            body="Hola, vimos que nos llamaste por {{1}} y la llamada se cortó tras {{2}} de espera. ¿Seguimos por aquí?",
            buttons=[WhatsAppButton(id="continue", text="Sí, sigamos"), WhatsAppButton(id="call_me", text="Prefiero llamada")],
        ),
        WhatsAppTemplate(
            name="call_recovery", language="en",
            body="Hi, we saw you called us about {{1}} and the call dropped after {{2}} on hold. Shall we continue here?",
            buttons=[WhatsAppButton(id="continue", text="Yes, let's go on"), WhatsAppButton(id="call_me", text="Call me instead")],
        ),
        WhatsAppTemplate(
            name="call_documents", language="es",
            body="Hola, para tu llamada sobre {{1}}: envíanos por aquí fotos o documentos. Seguimos contigo en la línea.",
        ),
        WhatsAppTemplate(
            name="call_documents", language="en",
            body="Hi, for your call about {{1}}: send us photos or documents here. We are still with you on the line.",
        ),
    ]


def _default_intent_labels() -> dict[str, dict[str, str]]:
    return {
        "es": {
            "order_status": "el estado de tu pedido", "appointment": "tu cita", "duplicate_document": "un duplicado de tu documento",
            "opening_hours": "nuestros horarios", "policy_info": "tu póliza", "payment": "tu pago",
            "send_documents": "el envío de tus documentos", "update_details": "la actualización de tus datos",
            "billing_dispute": "un cobro en tu factura", "technical_support": "un problema técnico",
            "cancel_service": "la cancelación de tu servicio", "fraud_or_loss": "una tarjeta perdida o robada",
            "complaint": "tu queja", "agent_request": "hablar con un asesor",
        },
        "en": {
            "order_status": "your order status", "appointment": "your appointment", "duplicate_document": "a copy of your document",
            "opening_hours": "our opening hours", "policy_info": "your policy", "payment": "your payment",
            "send_documents": "sending your documents", "update_details": "updating your details",
            "billing_dispute": "a charge on your bill", "technical_support": "a technical problem",
            "cancel_service": "cancelling your service", "fraud_or_loss": "a lost or stolen card",
            "complaint": "your complaint", "agent_request": "talking to an agent",
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
    recovery_template: str = Field(
        "call_recovery", description="Template of the message after a caller hung up before being served ({{1}} the reason, {{2}} the wait)."
    )
    documents_template: str = Field(
        "call_documents", description="Template of the link for documents and photos sent during a voice call ({{1}} the reason).",
    )
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
        default_factory=_default_intent_labels,
        description="language → intent → words used for {{1}} (the call reason) of the follow-up and recovery templates.",
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
        for setting in ("template", "recovery_template", "documents_template"):
            if getattr(self, setting) not in names:
                raise ValueError(f"{setting} {getattr(self, setting)!r} is not in templates {sorted(names)}")
        return self

    @property
    def reason_templates(self) -> frozenset[str]:
        """The templates whose {{1}} is the call reason, an intent id that ``intent_labels`` puts into words."""
        return frozenset({self.template, self.recovery_template, self.documents_template})

    @property
    def sandbox(self) -> bool:
        """No credentials: the local emulator answers instead of Meta's Cloud API."""
        return self.access_token is None


def _handoff_words() -> dict[str, list[str]]:
    return {
        "es": ["agente", "asesor", "asesora", "persona", "humano", "operador", "operadora"],
        "en": ["agent", "human", "person", "representative", "operator"],
    }


class FlowSettings(_Section):
    """Self-service flows that continue a deflected call on WhatsApp."""

    enabled: bool = Field(True, description="Answer customers' WhatsApp replies with the flows; off: replies are only recorded.")
    file: Path | None = Field(None, description="Flows YAML; default: the bundled gateway/flows/default_flows.yaml.")
    documents_flow: str = Field("send_documents", description="The flow a reply to the documents link of a voice call opens.")
    backend_url: str | None = Field(
        None,
        description="Value of {backend_url} in the flows' backend URLs; default: this gateway's own /demo-backend "
                    "(a stand-in for the customer's systems, for the offline demo only).",
    )
    backend_timeout_s: float = Field(5.0, gt=0, description="Timeout of one backend call when the step sets none.")
    handoff_webhook_url: str | None = Field(None, description="Where a handoff to a human chat agent is POSTed (JSON); none: only recorded.")
    handoff_secret: SecretStr | None = Field(
        None, description="Signs each handoff body: header X-Puente-Signature-256: sha256=<HMAC-SHA256 hex>; none: unsigned.",
    )
    handoff_timeout_s: float = Field(5.0, gt=0, description="HTTP timeout of one handoff webhook attempt.")
    handoff_attempts: int = Field(3, ge=1, description="Immediate attempts of the handoff webhook (with backoff) before it is marked failed.")
    handoff_backoff_s: float = Field(0.5, ge=0, description="First delay between handoff attempts (jittered: half to all of it); doubles each time, up to handoff_retry_interval_s.")
    handoff_retry_interval_s: float = Field(60.0, gt=0, description="A failed handoff webhook is tried again this often, in the background.")
    handoff_max_attempts: int = Field(30, ge=1, description="Total handoff attempts before giving up for good (status stays failed).")
    handoff_words: dict[str, list[str]] = Field(
        default_factory=_handoff_words, description="language → words that ask for a human at any step (whole words, any case).",
    )
    recover_window_s: float = Field(
        600.0, ge=0, description="At start-up, customer messages this recent that a crash left unanswered are handled.",
    )
    max_invalid: int = Field(2, ge=1, description="Invalid answers to one question before the customer is handed to an agent.")
    csat: bool = Field(True, description="Ask the 1–5 satisfaction question after a flow resolves.")
    demo_backend: bool = Field(True, description="Serve the demo backend under /demo-backend (answers the default flows offline).")

    @model_validator(mode="after")
    def _valid(self) -> "FlowSettings":
        if self.handoff_max_attempts < self.handoff_attempts:
            raise ValueError("handoff_max_attempts must be at least handoff_attempts")
        return self


class Settings(_Section):
    sip: SipSettings = SipSettings()
    http: HttpSettings = HttpSettings()
    database: DatabaseSettings = DatabaseSettings()
    # Made per Settings, not at import: their cache dirs follow $XDG_CACHE_HOME when loaded.
    asr: AsrSettings = Field(default_factory=AsrSettings)
    endpointing: EndpointingSettings = EndpointingSettings()
    nlu: NluSettings = Field(default_factory=NluSettings)
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
    queues: dict[str, QueueSettings] = Field(
        default_factory=dict, description="Queue (skill) name → queue; none: voice calls follow routing.agent_uri or hold.",
    )
    registrar: RegistrarSettings = RegistrarSettings()
    prompts_dir: Path | None = Field(None, description="Directory of <lang>/<prompt>.wav; default: the bundled prompts.")

    def line(self, extension: str) -> LineSettings:
        return self.lines.get(extension) or self.lines.get("default") or LineSettings()

    @property
    def languages(self) -> tuple[str, ...]:
        """Every language some line speaks, in the order the lines name them."""
        return tuple(dict.fromkeys(lang for line in self.lines.values() for lang in line.languages))

    # The one place the parts' configs are derived: by field name, renamed fields mapped here.

    def sip_config(self) -> SipConfig:
        return SipConfig(**self.sip.model_dump())

    def registrar_config(self) -> RegistrarConfig:
        return RegistrarConfig(**{**self.registrar.model_dump(), "host": self.registrar.host or self.sip.host})

    def agent_passwords(self) -> dict[str, str]:
        """Agent id → password of every agent whose phone registers."""
        return {a.id: a.password.get_secret_value() for q in self.queues.values() for a in q.agents if a.password}

    def endpointer_config(self) -> EndpointerConfig:
        # vad_aggressiveness configures the VAD the endpointer is handed, early_commit_* the session's early
        # commit: none is the endpointer's.
        return EndpointerConfig(**self.endpointing.model_dump(exclude=_SESSION_ENDPOINTING))

    def transcriber_config(self) -> TranscriberConfig:
        return TranscriberConfig(
            **self.asr.model_dump(exclude={"workers", "max_wait_s", "second_opinion", "biasing"}),
            num_workers=self.asr.workers,  # YAML key kept from before the part's name
            languages=self.languages,  # callers may speak what their lines allow, nothing else
        )

    def queue_of(self, intent: str | None) -> str | None:
        """The queue a voice call with ``intent`` waits in, or None when no queues are configured."""
        if not self.queues:
            return None
        return self.routing.skills.get(intent or "") or self.routing.default_queue or next(iter(self.queues))

    @model_validator(mode="after")
    def _queues_exist(self) -> "Settings":
        named = {*self.routing.skills.values(), *([self.routing.default_queue] if self.routing.default_queue else [])}
        missing = sorted(named - set(self.queues))
        if missing:
            raise ValueError(f"routing names queues that are not configured: {missing}")
        # An agent listed in several queues has several skills: one phone, one call at a time.
        uris: dict[str, set[str | None]] = {}
        for queue in self.queues.values():
            for agent in queue.agents:
                uris.setdefault(agent.id, set()).add(agent.uri or agent.password.get_secret_value())
        clashing = sorted(agent for agent, seen in uris.items() if len(seen) > 1)
        if clashing:
            raise ValueError(f"agents listed with different URIs or passwords in different queues: {clashing}")
        return self

    @model_validator(mode="after")
    def _parts_accept(self) -> "Settings":
        # The parts check their own configs (__post_init__): run those checks at load, naming the section.
        for section, derive in (("sip", self.sip_config), ("endpointing", self.endpointer_config), ("asr", self.transcriber_config),
                                ("registrar", self.registrar_config)):
            try:
                derive()
            except ValueError as exc:
                raise PydanticCustomError("part_config", "{section}: {error}", {"section": section, "error": str(exc)}) from None
        return self


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
            # Whole-settings checks (the parts' own) have no location; their message names the section.
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"] else err["msg"] for err in exc.errors()
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
