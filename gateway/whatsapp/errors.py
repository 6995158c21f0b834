"""What can go wrong sending to the Cloud API, one class per way the sender must react.

Meta recommends handling errors by ``code`` (titles are being deprecated), so the class is
chosen from the Graph error code first and the HTTP status second.
"""
from __future__ import annotations


class WhatsAppError(Exception):
    """Base of every WhatsApp channel error."""


class MessageBuildError(WhatsAppError):
    """An outbox payload cannot become a valid Cloud API message (e.g. unknown template); never sent."""


class OutsideWindowError(WhatsAppError):
    """Free-form text/interactive outside the 24-hour customer-service window: only a template may be sent."""

    code = 131047


class CloudApiError(WhatsAppError):
    """The API answered with an error. ``retryable`` says whether the same request may succeed later."""

    retryable = False

    def __init__(self, message: str, *, code: int | None, http_status: int, details: str | None = None,
                 fbtrace_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.details = details
        self.fbtrace_id = fbtrace_id

    def describe(self) -> str:
        detail = f" ({self.details})" if self.details else ""
        return f"{self.code if self.code is not None else 'HTTP ' + str(self.http_status)}: {self}{detail}"


class RetryableApiError(CloudApiError):
    """Throughput (130429), pair rate (131056), not delivered for engagement (131049),
    account maintenance (131057), or a server error (5xx): back off and try again."""

    retryable = True


class UndeliverableError(CloudApiError):
    """131026: the number cannot receive this message (not on WhatsApp, old client, blocked).
    Not retried; recorded so another channel can take over."""


class ReengagementError(CloudApiError):
    """131047: more than 24 hours since the customer last wrote; only a template may be sent."""


class TemplateError(CloudApiError):
    """132xxx: the template is missing, unapproved or its parameters do not match — a configuration problem."""


class TokenExpiredError(CloudApiError):
    """190: the access token expired or was revoked. Nothing can be sent until it is replaced."""


class InvalidRequestError(CloudApiError):
    """Any other 4xx: the request itself is wrong; repeating it will not help."""


class SendNotAttempted(WhatsAppError):
    """The request never left (connection refused, no pooled connection): safe to retry."""


class DeliveryInDoubt(WhatsAppError):
    """The request may have reached the API but no answer came (timeout, dropped connection).
    Re-sending blindly could deliver twice; the outbox reconciles first."""


RETRYABLE_CODES = frozenset({130429, 131056, 131049, 131057})
# Graph's transient "unknown/service" codes, returned with 5xx.
TRANSIENT_GRAPH_CODES = frozenset({1, 2, 131000})


#: 131026: the number cannot receive WhatsApp messages (``UndeliverableError``).
UNDELIVERABLE = 131026
#: Failures after which another channel should reach the customer instead.
FALLBACK_CODES = frozenset({UNDELIVERABLE})


def classify(code: int | None, http_status: int, message: str, details: str | None, fbtrace_id: str | None) -> CloudApiError:
    kwargs = {"code": code, "http_status": http_status, "details": details, "fbtrace_id": fbtrace_id}
    if code in RETRYABLE_CODES or http_status >= 500 or http_status == 429 or code in TRANSIENT_GRAPH_CODES:
        return RetryableApiError(message, **kwargs)
    if code == UNDELIVERABLE:
        return UndeliverableError(message, **kwargs)
    if code == 131047:
        return ReengagementError(message, **kwargs)
    if code == 190 or http_status == 401:
        return TokenExpiredError(message, **kwargs)
    if code is not None and 132000 <= code < 133000:
        return TemplateError(message, **kwargs)
    return InvalidRequestError(message, **kwargs)
