"""OpenID Connect id_tokens (SMART App Launch 2.x "Scopes for requesting identity data").

An RS256 JWT (RFC 7519, OpenID Connect Core 2) signed with an RSA key kept in the EHR's data folder and
published as a JWK Set (RFC 7517) at ``jwks_uri``. Signing and the JWK format are joserfc's; only the
choice of claims is ours: ``iss`` (the FHIR base), ``sub`` (the username), ``aud`` (the client id),
``iat``, ``exp``, ``nonce`` when the authorization request carried one, and ``fhirUser`` when the
``fhirUser`` scope was granted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

#: id_tokens are for the app's eyes at sign-in; five minutes is ample.
ID_TOKEN_LIFETIME = 300


class IdTokenSigner:
    """Holds the signing key; signs id_tokens and publishes the public key set."""

    def __init__(self, key: RSAKey, issuer: str) -> None:
        self.key = key
        self.issuer = issuer

    @classmethod
    def load_or_create(cls, path: Path, issuer: str) -> IdTokenSigner:
        """Read the private JWK from ``path``, or generate a 2048-bit RSA key there on first start."""
        if path.exists():
            key = RSAKey.import_key(json.loads(path.read_text()))
        else:
            key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, private=True,
                                      auto_kid=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(key.as_dict(private=True), f)
            tmp.replace(path)
        return cls(key, issuer)

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set served at ``jwks_uri``."""
        return dict(KeySet([self.key]).as_dict(private=False))

    def sign(self, *, subject: str, client_id: str, now: float, nonce: str | None = None,
             fhir_user: str | None = None, name: str | None = None) -> str:
        claims: dict[str, Any] = {"iss": self.issuer, "sub": subject, "aud": client_id, "iat": int(now),
                                  "exp": int(now) + ID_TOKEN_LIFETIME}
        if nonce:
            claims["nonce"] = nonce
        if fhir_user:
            claims["fhirUser"] = fhir_user
        if name:
            claims["name"] = name
        return jwt.encode({"alg": "RS256", "typ": "JWT", "kid": self.key.kid}, claims, self.key)
