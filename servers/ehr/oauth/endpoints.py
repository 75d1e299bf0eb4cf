"""The EHR's URL layout (fixed; documented in ``docs/ehr-auth.md``).

The EHR serves at ``{url}``; the FHIR base is ``{url}/fhir`` and is the only valid ``aud``
(SMART App Launch 2.x, "Obtaining authorization code"). OAuth endpoints live under ``{url}/auth/``.
The FHIR API's CapabilityStatement names these URLs in its SMART security extension, so it builds them
with :meth:`OAuthEndpoints.from_fhir_base` instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OAuthEndpoints:
    """Every public URL of the authorization server, derived from the EHR's base URL."""

    base_url: str

    @classmethod
    def from_fhir_base(cls, fhir_base: str) -> OAuthEndpoints:
        base = fhir_base.rstrip("/")
        if not base.endswith("/fhir"):
            raise ValueError(f"the EHR's FHIR base ends with /fhir, got {fhir_base!r}")
        return cls(base[: -len("/fhir")])

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @property
    def fhir_base(self) -> str:
        return f"{self.base_url}/fhir"

    @property
    def issuer(self) -> str:
        """The OpenID Connect issuer (``iss`` of id_tokens and introspection answers): the FHIR base."""
        return self.fhir_base

    @property
    def smart_configuration(self) -> str:
        return f"{self.fhir_base}/.well-known/smart-configuration"

    @property
    def authorize(self) -> str:
        return f"{self.base_url}/auth/authorize"

    @property
    def token(self) -> str:
        return f"{self.base_url}/auth/token"

    @property
    def introspect(self) -> str:
        return f"{self.base_url}/auth/introspect"

    @property
    def revoke(self) -> str:
        return f"{self.base_url}/auth/revoke"

    @property
    def jwks(self) -> str:
        return f"{self.base_url}/auth/jwks"

    def security_extension(self) -> dict[str, object]:
        """The FHIR R4 ``CapabilityStatement.rest.security`` extension SMART App Launch defines
        ("oauth-uris"), for the FHIR API's ``/metadata``."""
        return {
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [
                {"url": "authorize", "valueUri": self.authorize},
                {"url": "token", "valueUri": self.token},
                {"url": "introspect", "valueUri": self.introspect},
                {"url": "revoke", "valueUri": self.revoke},
            ],
        }
