"""Who may call ``/introspect`` (RFC 7662 2.1: "the protected resource ... MUST authenticate"):

- a registered confidential client with ``client_secret_basic`` (RFC 6749 2.3.1), or
- a bearer token (RFC 6750 2.1) that the EHR says is active and was issued to a registered confidential
  client (e.g. the broker's client_credentials token). Checked through the service's own decider, so
  only in relay mode: the FHIR oracle cannot tell who a token belongs to.

Anything else is a 401 with ``WWW-Authenticate``; the token being asked about is never read first.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from s4s_jupyter.core.errors import OAuthError
from servers.ehr.oauth.clients import Client, ClientRegistry


class CallerUnauthorized(OAuthError):
    status = 401
    error = "invalid_client"


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    """``(client_id, secret)`` of an HTTP Basic header (RFC 7617; RFC 6749 2.3.1 form-encodes both)."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, secret = decoded.partition(":")
    if not sep:
        return None
    return unquote(user.replace("+", " ")), unquote(secret.replace("+", " "))


class CallerRegistry:
    def __init__(self, clients: tuple[Client, ...]) -> None:
        self.registry = ClientRegistry(c for c in clients if c.is_confidential)

    def by_secret(self, client_id: str, secret: str) -> Client:
        client = self.registry.get(client_id)
        if client is None or not client.check_client_secret(secret):
            raise CallerUnauthorized("unknown client or wrong secret")
        return client

    def by_client_id(self, client_id: str | None) -> Client:
        client = self.registry.get(client_id)
        if client is None:
            raise CallerUnauthorized("the bearer token was not issued to a registered confidential client")
        return client
