"""Puente's telephony edge: SIP calls in, 16 kHz PCM frames and call events out.

Knows nothing of intents, WhatsApp or databases; see ``SipEndpoint`` for the
gateway side, ``SipCaller`` for placing test calls and ``Registrar`` for the agents'
softphones that REGISTER with the gateway.
"""
from sip.caller import CallResult, CallScript, LiveCall, SipCaller
from sip.capabilities import PjsuaBuild, pjsua2_build
from sip.config import SipConfig
from sip.endpoint import SipEndpoint, pjsua_max_calls
from sip.errors import SipError, SipNotRunningError, SipStartError
from sip.events import (
    CallEnded,
    CallEvent,
    CallHandler,
    CallMediaReady,
    DialProgress,
    DtmfReceived,
    IncomingCall,
    PlaybackFinished,
    TransferUpdate,
)
from sip.registrar import Binding, Registrar, RegistrarConfig

__all__ = [
    "Binding",
    "CallEnded",
    "CallEvent",
    "CallHandler",
    "CallMediaReady",
    "CallResult",
    "CallScript",
    "DialProgress",
    "DtmfReceived",
    "IncomingCall",
    "LiveCall",
    "PlaybackFinished",
    "Registrar",
    "RegistrarConfig",
    "SipCaller",
    "PjsuaBuild",
    "SipConfig",
    "SipEndpoint",
    "SipError",
    "SipNotRunningError",
    "SipStartError",
    "TransferUpdate",
    "pjsua2_build",
    "pjsua_max_calls",
]
