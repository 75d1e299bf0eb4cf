"""SMART configuration discovery (SMART App Launch 2.x, "Conformance": ``.well-known/smart-configuration``).

An EHR publishes its authorization endpoints and capabilities as JSON at
``{fhir_base}/.well-known/smart-configuration``. The SMART Imaging Access conventions add
``associated_endpoints``: other servers that accept the EHR's tokens, each with ``capabilities``; the
imaging server is the one with ``smart-imaging-access``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from s4s_jupyter.core.errors import ClientError

if TYPE_CHECKING:
    import httpx

#: capability an associated endpoint names when it serves imaging with the EHR's tokens
IMAGING_CAPABILITY = "smart-imaging-access"


@dataclass(frozen=True)
class AssociatedEndpoint:
    """One entry of ``associated_endpoints``: a server that accepts this EHR's tokens."""

    url: str
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class SmartConfiguration:
    """The fields of ``.well-known/smart-configuration`` the kit uses; the rest are kept in ``extra``.

    Build it with :meth:`from_json` (validates the required fields) and turn it back into JSON with
    :meth:`to_json`; ``SmartConfiguration.from_json(c.to_json()) == c``.
    """

    authorization_endpoint: str
    token_endpoint: str
    issuer: str | None = None
    jwks_uri: str | None = None
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = None
    management_endpoint: str | None = None
    registration_endpoint: str | None = None
    capabilities: tuple[str, ...] = ()
    code_challenge_methods_supported: tuple[str, ...] = ()
    grant_types_supported: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    response_types_supported: tuple[str, ...] = ()
    token_endpoint_auth_methods_supported: tuple[str, ...] = ()
    associated_endpoints: tuple[AssociatedEndpoint, ...] = ()
    #: RFC 9207 3: the server puts ``iss`` into every authorization response (then a response without
    #: it is refused: :func:`s4s_jupyter.client.launch.parse_redirect`)
    authorization_response_iss_parameter_supported: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> SmartConfiguration:
        """Parse the document; raise :class:`ClientError` when a required endpoint is missing or the
        server does not support PKCE S256 (SMART App Launch 2.x requires it; the kit always uses it)."""
        if not isinstance(body, Mapping):
            raise ClientError("smart-configuration is not a JSON object", status=502, body=body)
        for name in ("authorization_endpoint", "token_endpoint"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise ClientError(f"smart-configuration lacks {name}", status=502, body=dict(body))
        methods = body.get("code_challenge_methods_supported")
        if methods is not None and "S256" not in methods:
            raise ClientError("the server does not support PKCE S256 (code_challenge_methods_supported="
                              f"{methods!r}); refusing to log in without it", status=502, body=dict(body))
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        for name in known:
            if name not in body or body[name] is None:
                continue
            value = body[name]
            if name == "associated_endpoints":
                value = tuple(AssociatedEndpoint(str(e["url"]), tuple(e.get("capabilities") or ()))
                              for e in value if isinstance(e, Mapping) and e.get("url"))
            elif name == "authorization_response_iss_parameter_supported":
                value = value is True
            elif isinstance(value, list):
                value = tuple(str(v) for v in value)
            kwargs[name] = value
        return cls(**kwargs, extra={k: v for k, v in body.items() if k not in known})

    def to_json(self) -> dict[str, Any]:
        """The document as JSON (unset optional fields left out)."""
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None or value == ():
                continue
            if f.name == "associated_endpoints":
                value = [{"url": e.url, "capabilities": list(e.capabilities)} for e in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @property
    def imaging_endpoint(self) -> str | None:
        """The FHIR base of the imaging server (first associated endpoint with ``smart-imaging-access``)."""
        for endpoint in self.associated_endpoints:
            if IMAGING_CAPABILITY in endpoint.capabilities:
                return endpoint.url.rstrip("/")
        return None


def well_known_url(fhir_base: str) -> str:
    """``{fhir_base}/.well-known/smart-configuration``."""
    return fhir_base.rstrip("/") + "/.well-known/smart-configuration"


def discover(http: httpx.Client, fhir_base: str) -> SmartConfiguration:
    """Fetch and parse the EHR's SMART configuration."""
    url = well_known_url(fhir_base)
    response = http.get(url, headers={"Accept": "application/json"})
    if response.status_code != 200:
        raise ClientError(f"GET {url} answered {response.status_code}", status=response.status_code,
                          body=response.text[:2000])
    try:
        body = response.json()
    except ValueError as exc:
        raise ClientError(f"GET {url} did not answer JSON", status=502, body=response.text[:2000]) from exc
    return SmartConfiguration.from_json(body)
