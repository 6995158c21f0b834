"""Exceptions raised by the SIP edge."""
from __future__ import annotations


class SipError(Exception):
    """Base class for errors of the ``sip`` package."""


class SipStartError(SipError):
    """The SIP stack could not start (port in use, bad address, a second endpoint…)."""


class SipNotRunningError(SipError):
    """A command was sent to an endpoint that is not started or already stopped."""
