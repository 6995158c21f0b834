"""``flows:`` — settings of the WhatsApp self-service flows (add to ``gateway.config.Settings``).

Standalone on purpose (imports only pydantic), so ``gateway.config`` can import it.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


def _handoff_words() -> dict[str, list[str]]:
    return {
        "es": ["agente", "asesor", "asesora", "persona", "humano", "operador", "operadora"],
        "en": ["agent", "human", "person", "representative", "operator"],
    }


class FlowSettings(BaseModel):
    """Self-service flows that continue a deflected call on WhatsApp."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Answer customers' WhatsApp replies with the flows; off: replies are only recorded.")
    file: Path | None = Field(None, description="Flows YAML; default: the bundled gateway/flows/default_flows.yaml.")
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
    handoff_backoff_s: float = Field(0.5, ge=0, description="First delay between handoff attempts; doubles each time.")
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
