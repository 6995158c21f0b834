"""HMAC-SHA256 body signatures, as Meta signs its webhooks (``sha256=<hex>``) and as we sign ours."""
from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr


def sign(secret: SecretStr, body: bytes) -> str:
    """The ``sha256=<HMAC-SHA256 hex>`` signature of ``body`` under ``secret``."""
    return "sha256=" + hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()


def signature_valid(secret: SecretStr, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    # Compare bytes in constant time; a non-ASCII header simply fails to match.
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode("utf-8", "replace"))
