"""SIP over TLS and SRTP settings, shared by the gateway endpoint and the test caller."""
from __future__ import annotations

import re
from pathlib import Path

import pjsua2 as pj

from sip.errors import SipStartError

SRTP_USE = {
    "off": pj.PJMEDIA_SRTP_DISABLED,
    "optional": pj.PJMEDIA_SRTP_OPTIONAL,
    "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
}
_SRTP_ACTIVE = re.compile(r"SRTP status: Active Crypto-suite: (\S+)")


def apply_srtp(media: pj.AccountMediaConfig, mode: str, require_tls: bool) -> None:
    """``srtpUse`` from ``off``/``optional``/``mandatory``; ``srtpSecureSignaling`` 1 (the call's
    hop must be TLS, else pjsua answers 406) with ``require_tls``, else 0 (SDES in the clear)."""
    media.srtpUse = SRTP_USE[mode]
    media.srtpSecureSignaling = 1 if require_tls else 0


def tls_config(cert_file: Path | None, key_file: Path | None, ca_file: Path | None = None,
               verify_server: bool = False) -> pj.TlsConfig:
    """A TLS 1.2/1.3 ``TlsConfig``. A listener needs ``cert_file``/``key_file``; with ``ca_file``
    a server requires and verifies client certificates, a client (``verify_server``) the server's."""
    for path in (cert_file, key_file, ca_file):
        if path is not None:
            try:
                Path(path).read_bytes()
            except OSError as exc:
                raise SipStartError(f"cannot read TLS file {path}: {exc.strerror}") from None
    tls = pj.TlsConfig()
    tls.proto = pj.PJ_SSL_SOCK_PROTO_TLS1_2 | pj.PJ_SSL_SOCK_PROTO_TLS1_3
    if cert_file is not None:
        tls.certFile = str(cert_file)
    if key_file is not None:
        tls.privKeyFile = str(key_file)
    if ca_file is not None:
        tls.CaListFile = str(ca_file)
        tls.verifyClient = tls.requireClientCert = not verify_server
        tls.verifyServer = verify_server
    return tls


def srtp_suite(call: pj.Call) -> str | None:
    """The crypto suite of the call's active SRTP session (``AES_CM_128_HMAC_SHA1_80``), None
    for plain RTP. Read from pjsua's call dump: an ``optional`` offer negotiates SRTP inside
    an RTP/AVP profile, so the stream's profile alone cannot tell."""
    match = _SRTP_ACTIVE.search(call.dump(True, ""))
    return match.group(1) if match else None
