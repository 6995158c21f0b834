"""The WhatsApp channel: Cloud API client, durable outbox sender, webhooks, the account's state, and the local sandbox.

Entry points for the gateway: ``build_whatsapp`` (everything from settings), or the parts —
``CloudApiClient``, ``OutboxWorker``, ``create_whatsapp_router``, ``AccountHealth``, ``Sandbox``.
"""
from gateway.signing import sign, signature_valid
from gateway.timing import Clock, SystemClock, backoff_delay
from gateway.whatsapp import wire
from gateway.whatsapp.account import AccountHealth
from gateway.whatsapp.channel import WhatsAppChannel, build_whatsapp, local_base
from gateway.whatsapp.client import CloudApiClient, SendResult
from gateway.whatsapp.errors import (
    CloudApiError,
    DeliveryInDoubt,
    InvalidRequestError,
    MessageBuildError,
    OutsideWindowError,
    ReengagementError,
    RetryableApiError,
    SendNotAttempted,
    TemplateError,
    TokenExpiredError,
    UndeliverableError,
    WhatsAppError,
)
from gateway.whatsapp.outbox import Alert, OutboxWorker
from gateway.whatsapp.pacing import Throttle
from gateway.whatsapp.sandbox import FaultRequest, ReplyRequest, Sandbox
from gateway.whatsapp.templates import MessageBuilder, TemplateRegistry
from gateway.whatsapp.webhooks import InboundEvent, create_whatsapp_router

__all__ = [
    "AccountHealth", "Alert", "Clock", "CloudApiClient", "CloudApiError", "DeliveryInDoubt", "FaultRequest", "InboundEvent",
    "InvalidRequestError", "MessageBuildError", "MessageBuilder", "OutboxWorker", "OutsideWindowError",
    "ReengagementError", "ReplyRequest", "RetryableApiError", "Sandbox", "SendNotAttempted", "SendResult",
    "SystemClock", "TemplateError", "TemplateRegistry", "Throttle", "TokenExpiredError", "UndeliverableError",
    "WhatsAppChannel", "WhatsAppError", "backoff_delay", "build_whatsapp", "create_whatsapp_router", "local_base",
    "sign", "signature_valid", "wire",
]
