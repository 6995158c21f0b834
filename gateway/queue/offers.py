"""When a waiting caller is offered WhatsApp instead of waiting on: the queue's offer policy."""
from __future__ import annotations

from datetime import datetime

from gateway.config import OfferSettings
from gateway.queue.hours import OpenHours
from gateway.queue.tickets import Ticket, TicketState


class OfferPolicy:
    """Pure: everything it decides on is passed in (the ticket, the estimate, the times)."""

    def __init__(self, settings: OfferSettings, sla_s: float) -> None:
        self.settings = settings
        self.sla_s = sla_s
        self.hours = OpenHours(settings.hours, settings.timezone)

    def open(self, wall: datetime) -> bool:
        """Whether this queue makes offers at ``wall`` (enabled, within business hours)."""
        return self.settings.enabled and self.settings.max_offers > 0 and self.hours.is_open(wall)

    def reason(self, ticket: Ticket, *, estimated_wait_s: float, now: float, wall: datetime) -> str | None:
        """Why ``ticket``'s caller should hear the offer now, or None to let them wait."""
        s = self.settings
        if ticket.holdout or ticket.declined or ticket.state is not TicketState.WAITING or not self.open(wall):
            return None
        if s.intents is not None and ticket.intent not in s.intents:
            return None
        if ticket.offers >= s.max_offers or (ticket.last_offer is not None and now - ticket.last_offer < s.interval_s):
            return None
        waited = ticket.waited(now)
        if waited > self.sla_s:
            return f"waited {waited:.0f} s > SLA {self.sla_s:.0f} s"
        if estimated_wait_s > self.sla_s:
            return f"estimated wait {estimated_wait_s:.0f} s > SLA {self.sla_s:.0f} s"
        return None
