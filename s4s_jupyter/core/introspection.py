"""The token introspection answer (RFC 7662 2.2) with SMART App Launch's fields.

One value object shared by the EHR (which issues it), the introspection service (which relays or
derives it), the broker (which decides with it) and the kit (which may show it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class IntrospectionResult:
    """RFC 7662 2.2 answer. For anything not active only ``{"active": false}`` goes on the wire."""

    active: bool
    scope: str = ""
    client_id: str | None = None
    exp: int | None = None
    iat: int | None = None
    patient: str | None = None
    sub: str | None = None
    fhir_user: str | None = None
    iss: str | None = None
    token_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.scope.split())

    def to_json(self) -> dict[str, Any]:
        if not self.active:
            return {"active": False}
        out: dict[str, Any] = {"active": True, "scope": self.scope}
        for key, value in (("client_id", self.client_id), ("exp", self.exp), ("iat", self.iat),
                           ("patient", self.patient), ("sub", self.sub), ("fhirUser", self.fhir_user),
                           ("iss", self.iss), ("token_type", self.token_type)):
            if value is not None:
                out[key] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IntrospectionResult:
        """Parse an RFC 7662 answer. Anything but a literal JSON ``true`` for ``active`` is inactive."""
        if data.get("active") is not True:
            return cls(active=False)
        known = {"active", "scope", "client_id", "exp", "iat", "patient", "sub", "fhirUser", "iss",
                 "token_type"}

        def _int(v: Any) -> int | None:
            return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

        def _str(v: Any) -> str | None:
            return v if isinstance(v, str) else None

        return cls(
            active=True,
            scope=_str(data.get("scope")) or "",
            client_id=_str(data.get("client_id")),
            exp=_int(data.get("exp")),
            iat=_int(data.get("iat")),
            patient=_str(data.get("patient")),
            sub=_str(data.get("sub")),
            fhir_user=_str(data.get("fhirUser")),
            iss=_str(data.get("iss")),
            token_type=_str(data.get("token_type")),
            extra={k: v for k, v in data.items() if k not in known},
        )
