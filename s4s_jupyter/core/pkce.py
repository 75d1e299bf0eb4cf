"""Proof Key for Code Exchange (RFC 7636), S256 only (SMART App Launch 2.x requires S256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")  # RFC 7636 4.1


def make_verifier(nbytes: int = 48) -> str:
    """A fresh high-entropy code verifier (64 characters for the default 48 bytes)."""
    return secrets.token_urlsafe(nbytes)


def is_valid_verifier(verifier: str) -> bool:
    return _VERIFIER.match(verifier) is not None


def s256_challenge(verifier: str) -> str:
    """``BASE64URL(SHA256(ASCII(code_verifier)))`` without padding (RFC 7636 4.2)."""
    if not is_valid_verifier(verifier):
        raise ValueError("code_verifier must be 43-128 characters of [A-Za-z0-9-._~] (RFC 7636 4.1)")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_s256(verifier: str, challenge: str) -> bool:
    """Constant-time check of ``verifier`` against an S256 ``challenge``."""
    if not is_valid_verifier(verifier):
        return False
    return hmac.compare_digest(s256_challenge(verifier), challenge)
