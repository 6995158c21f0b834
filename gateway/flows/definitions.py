"""Flow definitions: YAML → validated, explicit state machines (one per intent).

```yaml
texts:                       # shared texts (csat question, thanks, handoff…); see COMMON_TEXTS
flows:
  order_status:
    start: order_number
    steps:
      order_number: {type: ask, var: order_number, pattern: '\\b(\\d{5,10})\\b', reuse: [transcript],
                     text: {es: "¿Cuál es tu número de pedido?", en: "What is your order number?"}, next: lookup}
      lookup: {type: call_backend, method: GET, url: "{backend_url}/orders/{order_number}?lang={language}",
               timeout_s: 5, save: {status: status, eta: eta}, on_status: {404: not_found}, next: answer}
      answer: {type: say, text: {es: "Tu pedido {order_number} está {status}.", en: "…"}, next: done}
      not_found: {type: handoff, reason: order_not_found}
      done: {type: resolve}
```

Step types: ``ask`` (free text, optional regex ``pattern`` whose first group is kept, ``reuse``
variables searched before asking), ``buttons`` (≤3 options: reply buttons; more: a list),
``call_backend`` (HTTP; ``save`` maps dotted JSON paths into variables; ``on_status`` routes by HTTP
status; anything else that fails goes to ``on_error``, by default a handoff), ``say``,
``collect_media`` (images/documents; a "done" button ends it), ``handoff``, ``resolve``.
``next``/option targets name a step; ``handoff`` and ``resolve`` are always available.
Texts are ``{es: …, en: …}`` (or one string) with ``{variable}`` placeholders.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_FLOWS = Path(__file__).with_name("default_flows.yaml")
BUILTIN_TARGETS = ("handoff", "resolve")
_VAR = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}")


class FlowError(Exception):
    """The flows file cannot be used; the message says which flow/step and why."""


LocalText = dict[str, str]


def _local(value: Any) -> Any:
    return {"*": value} if isinstance(value, str) else value


def pick(text: LocalText | None, language: str) -> str:
    """The text in ``language``, else Spanish, else any."""
    if not text:
        return ""
    return text.get(language) or text.get("*") or text.get("es") or next(iter(text.values()))


def render(template: str, variables: dict[str, Any], *, quote: bool = False) -> str:
    """``{name}`` → the variable's value (missing: empty). No attribute or index access, so no format-string tricks."""
    from urllib.parse import quote as url_quote

    def value(m: re.Match[str]) -> str:
        raw = variables.get(m.group(1))
        text = "" if raw is None else str(raw)
        return url_quote(text, safe="") if quote and m.group(1) not in _RAW_URL_VARS else text

    return _VAR.sub(value, template)


def dig(data: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``order.items.0.name``) of a backend's JSON answer; None when absent."""
    node = data
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def render_json(value: Any, variables: dict[str, Any]) -> Any:
    """A backend request body with ``{name}`` placeholders filled in, at any depth."""
    if isinstance(value, str):
        whole = re.fullmatch(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}", value)
        if whole:  # a lone placeholder keeps the variable's own JSON type (lists of documents, numbers)
            return variables.get(whole.group(1))
        return render(value, variables)
    if isinstance(value, dict):
        return {k: render_json(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [render_json(v, variables) for v in value]
    return value


_RAW_URL_VARS = frozenset({"backend_url"})


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = ""
    next: str | None = None

    @field_validator("text", "invalid", "ack", "done", mode="before", check_fields=False)
    @classmethod
    def _texts(cls, value: Any) -> Any:
        return _local(value)

    def targets(self) -> list[str]:
        return [self.next] if self.next else []


class AskStep(_Step):
    type: Literal["ask"]
    var: str
    text: LocalText
    pattern: str | None = Field(None, description="Regex the answer must match; group 1 (or the whole match) is kept.")
    reuse: list[str] = Field(default_factory=list, description="Variables (e.g. transcript) searched with pattern before asking.")
    invalid: LocalText | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern {value!r} is not a valid regex: {exc}") from exc
        return value

    def extract(self, text: str | None) -> str | None:
        if text is None or not text.strip():
            return None
        if self.pattern is None:
            return text.strip()
        # Speech and people write numbers with spaces or dashes ("12 345", "12-345"): try both forms.
        for candidate in (text, re.sub(r"(?<=\d)[\s.-](?=\d)", "", text)):
            m = re.search(self.pattern, candidate, re.IGNORECASE)
            if m:
                return (m.group(1) if m.groups() and m.group(1) is not None else m.group(0)).strip()
        return None


class Option(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1, max_length=200, pattern=r"^[^|]+$")
    title: LocalText
    description: LocalText | None = None
    next: str | None = None

    @field_validator("title", "description", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        return _local(value)


class ButtonsStep(_Step):
    type: Literal["buttons"]
    text: LocalText
    options: list[Option] = Field(..., min_length=1, max_length=10)
    var: str | None = None
    button: LocalText = Field(default_factory=lambda: {"es": "Ver opciones", "en": "See options"}, description="List button label (>3 options).")
    invalid: LocalText | None = None

    @field_validator("button", mode="before")
    @classmethod
    def _button(cls, value: Any) -> Any:
        return _local(value)

    def targets(self) -> list[str]:
        return [t for t in [self.next, *(o.next for o in self.options)] if t]

    @model_validator(mode="after")
    def _routes(self) -> "ButtonsStep":
        if not self.next and any(o.next is None for o in self.options):
            raise ValueError("every option needs a next step when the step has none")
        if len({o.id for o in self.options}) != len(self.options):
            raise ValueError("option ids must be unique")
        return self


class CallBackendStep(_Step):
    type: Literal["call_backend"]
    method: Literal["GET", "POST", "PUT", "PATCH"] = "GET"
    url: str = Field(..., description="URL template; {backend_url} is inserted as is, other variables URL-encoded.")
    body: dict[str, Any] | None = Field(None, description="JSON body; string values are templates.")
    timeout_s: float | None = Field(None, gt=0)
    save: dict[str, str] = Field(default_factory=dict, description="variable → dotted path in the JSON answer.")
    on_status: dict[int, str] = Field(default_factory=dict, description="HTTP status → step (e.g. 404: not_found).")
    on_error: str = Field("handoff", description="Step for timeouts, connection errors and unmapped non-2xx answers.")

    def targets(self) -> list[str]:
        return [t for t in [self.next, self.on_error, *self.on_status.values()] if t]


class SayStep(_Step):
    type: Literal["say"]
    text: LocalText


class CollectMediaStep(_Step):
    type: Literal["collect_media"]
    text: LocalText
    var: str = "documents"
    accept: list[Literal["image", "document", "audio", "video"]] = ["image", "document"]
    min: int = Field(1, ge=0)
    max: int = Field(10, ge=1)
    ack: LocalText = Field(default_factory=lambda: {"es": "Recibido ({count}). Envía más o pulsa «Listo».",
                                                     "en": "Received ({count}). Send more or tap “Done”."})
    done: LocalText = Field(default_factory=lambda: {"es": "Listo", "en": "Done"})
    invalid: LocalText | None = None


class HandoffStep(_Step):
    type: Literal["handoff"]
    text: LocalText | None = None
    reason: str = "flow"


class ResolveStep(_Step):
    type: Literal["resolve"]
    text: LocalText | None = None
    csat: bool = True


Step = Annotated[AskStep | ButtonsStep | CallBackendStep | SayStep | CollectMediaStep | HandoffStep | ResolveStep, Field(discriminator="type")]
WAITING = (AskStep, ButtonsStep, CollectMediaStep)


class Flow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    intent: str = ""
    start: str
    steps: dict[str, Step]

    @model_validator(mode="after")
    def _graph(self) -> "Flow":
        for step_id, step in self.steps.items():
            step.id = step_id
        # The built-in ends are available under their own names unless a flow defines its own.
        self.steps.setdefault("handoff", HandoffStep(type="handoff", id="handoff"))
        self.steps.setdefault("resolve", ResolveStep(type="resolve", id="resolve"))
        if self.start not in self.steps:
            raise ValueError(f"start step {self.start!r} is not defined")
        for step in self.steps.values():
            if isinstance(step, (AskStep, SayStep, CallBackendStep, CollectMediaStep)) and not step.next:
                raise ValueError(f"step {step.id!r} ({step.type}) needs a next step")
            for target in step.targets():
                if target not in self.steps:
                    raise ValueError(f"step {step.id!r} goes to unknown step {target!r}")
        return self


COMMON_TEXTS: dict[str, LocalText] = {
    "csat": {"es": "¿Cómo calificarías esta atención del 1 (mala) al 5 (excelente)?",
             "en": "How would you rate this conversation from 1 (poor) to 5 (excellent)?"},
    "csat_button": {"es": "Calificar", "en": "Rate"},
    "csat_thanks": {"es": "¡Gracias por tu calificación! Que tengas un buen día.", "en": "Thanks for your rating! Have a nice day."},
    "resolved": {"es": "¡Me alegra haberte ayudado!", "en": "Glad I could help!"},
    "handoff": {"es": "Te comunico con una persona de nuestro equipo; en breve te escribe por aquí con todo el contexto de tu llamada.",
                "en": "I'm passing you to a person on our team; they will write to you here shortly with the full context of your call."},
    "invalid": {"es": "No te entendí. ", "en": "Sorry, I didn't get that. "},
    "closed": {"es": "Esta conversación ya terminó. Si necesitas algo más, escribe «agente» o llámanos.",
               "en": "This conversation has ended. If you need anything else, write “agent” or call us."},
    "in_handoff": {"es": "", "en": ""},
}


class FlowLibrary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: dict[str, LocalText] = Field(default_factory=dict)
    flows: dict[str, Flow]

    @model_validator(mode="after")
    def _fill(self) -> "FlowLibrary":
        for intent, flow in self.flows.items():
            flow.intent = intent
        self.texts = {**COMMON_TEXTS, **{k: _local(v) for k, v in self.texts.items()}}
        return self

    def text(self, name: str, language: str, variables: dict[str, Any] | None = None) -> str:
        return render(pick(self.texts.get(name), language), variables or {})

    @classmethod
    def load(cls, path: Path | None = None) -> "FlowLibrary":
        path = Path(path) if path is not None else DEFAULT_FLOWS
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise FlowError(f"cannot read flows file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise FlowError(f"flows file {path} is not valid YAML: {exc}") from exc
        return cls.parse(data, source=str(path))

    @classmethod
    def parse(cls, data: Any, *, source: str = "flows") -> "FlowLibrary":
        if not isinstance(data, dict) or not isinstance(data.get("flows"), dict):
            raise FlowError(f"{source}: expected a mapping with a 'flows:' mapping of intent → flow")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise FlowError(f"{source}: {problems}") from exc
