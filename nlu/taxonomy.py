"""The call reasons Puente recognises.

The names are a contract with ``gateway/`` (routing policy) and with the training
data in ``nlu/data/*.yml``: rename one here and both must follow.
"""

from __future__ import annotations

OUT_OF_SCOPE = "out_of_scope"

# Order matters only for display; the model's label order is stored with each model.
INTENTS: tuple[str, ...] = (
    "order_status",
    "appointment",
    "duplicate_document",
    "opening_hours",
    "policy_info",
    "payment",
    "send_documents",
    "update_details",
    "billing_dispute",
    "technical_support",
    "cancel_service",
    "fraud_or_loss",
    "complaint",
    "agent_request",
    OUT_OF_SCOPE,
)

DESCRIPTIONS: dict[str, str] = {
    "order_status": "Where an order, delivery or shipment is; late or missing deliveries.",
    "appointment": "Book, change, cancel or confirm an appointment or a technician visit.",
    "duplicate_document": "Get a copy of something we issued: invoice, receipt, statement, certificate, contract.",
    "opening_hours": "Opening hours, holidays and addresses of branches or stores.",
    "policy_info": "Questions about returns, refunds policy, warranty, terms and conditions, coverage.",
    "payment": "How, where or when to pay; payment link; paying a bill; payment methods and direct debit.",
    "send_documents": "The caller has to send us documents, photos or ID (and asks how/where).",
    "update_details": "Change personal or account details: address, email, phone number, name, account holder.",
    "billing_dispute": "A charge looks wrong: charged twice, amount too high, charge for something not contracted.",
    "technical_support": "A service, device, app or website does not work (internet down, no signal, app error, login problem).",
    "cancel_service": "Cancel, terminate, unsubscribe or not renew a service, plan, subscription or contract.",
    "fraud_or_loss": "Lost or stolen card/phone/document, transactions the caller did not make, hacked account, scams.",
    "complaint": "A formal complaint or claim about bad service, staff or an unresolved problem.",
    "agent_request": "The caller asks for a human: a person, an operator, an agent, a supervisor.",
    OUT_OF_SCOPE: (
        "Nothing this line handles: wrong number, weather, jokes, chit-chat, other companies' business, "
        "and utterances with no reason at all (a bare greeting, 'yes', silence). The gateway reprompts or "
        "routes to its default for this intent."
    ),
}

assert set(DESCRIPTIONS) == set(INTENTS)  # keep the two tables in step

