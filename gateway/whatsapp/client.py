"""Async Cloud API client: one method, ``send``, mapping every answer to a result or a typed error.

The access token lives only in the ``Authorization`` header of each request; it is never
part of the client's repr, a log line or an exception message.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from pydantic import SecretStr, ValidationError

from gateway.whatsapp import wire
from gateway.whatsapp.errors import DeliveryInDoubt, SendNotAttempted, classify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    wamid: str
    wa_id: str | None
    message_status: str | None


class CloudApiClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_version: str,
        phone_number_id: str,
        access_token: SecretStr,
        timeout_s: float = 10.0,
    ) -> None:
        self._http = http
        self._url = f"{base_url.rstrip('/')}/{api_version}/{phone_number_id}/messages"
        self._token = access_token
        self._timeout = timeout_s

    def __repr__(self) -> str:
        return f"CloudApiClient(url={self._url!r})"

    @property
    def messages_url(self) -> str:
        return self._url

    async def send(self, message: wire.TemplateMessage | wire.TextMessage | wire.InteractiveMessage) -> SendResult:
        """POST one message. Raises ``CloudApiError`` subclasses, ``SendNotAttempted`` or ``DeliveryInDoubt``."""
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        try:
            response = await self._http.post(self._url, json=wire.dump(message), headers=headers, timeout=self._timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing reached the API: retrying cannot duplicate.
            raise SendNotAttempted(f"{type(exc).__name__} to {self._url}") from None
        except httpx.TransportError as exc:
            # Sent, maybe processed, no answer: the message may exist on WhatsApp's side.
            raise DeliveryInDoubt(f"{type(exc).__name__} from {self._url}") from None
        if response.is_success:
            try:
                body = wire.SendResponse.model_validate_json(response.content)
            except ValidationError:
                raise DeliveryInDoubt(f"HTTP {response.status_code} with an unreadable body from {self._url}") from None
            contact = body.contacts[0].wa_id if body.contacts else None
            return SendResult(wamid=body.messages[0].id, wa_id=contact, message_status=body.messages[0].message_status)
        try:
            error = wire.ErrorResponse.model_validate_json(response.content).error
        except ValidationError:
            raise classify(None, response.status_code, f"HTTP {response.status_code} without a Graph error body", None, None) from None
        details = error.error_data.details if error.error_data else None
        raise classify(error.code, response.status_code, error.message, details, error.fbtrace_id)
