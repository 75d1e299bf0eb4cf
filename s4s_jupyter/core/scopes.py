"""SMART App Launch scopes, v1 and v2 (SMART App Launch 2.x, "Scopes and Launch Context").

Clinical scopes have the form ``{context}/{resourceType}.{permissions}[?{query}]``:

- context: ``patient``, ``user`` or ``system``;
- resourceType: a FHIR resource type or ``*``;
- permissions: v2 is an ordered subset of ``c r u d s`` (create, read, update, delete, search), e.g. ``rs``;
  v1 is ``read`` (= ``rs``), ``write`` (= ``cud``) or ``*`` (= ``cruds``);
- query (v2 only): search parameters that narrow the grant, e.g.
  ``patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory``.

Other scopes are launch and identity scopes: ``launch``, ``launch/patient``, ``launch/encounter``, ``openid``,
``fhirUser``, ``profile``, ``offline_access``, ``online_access``.

A request is allowed when at least one clinical scope grants its interaction on its resource type and, for a
scope with a query, the request's own search parameters carry the same restriction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qsl


class ScopeContext(StrEnum):
    PATIENT = "patient"
    USER = "user"
    SYSTEM = "system"


class Interaction(StrEnum):
    """The v2 permission letters."""

    CREATE = "c"
    READ = "r"
    UPDATE = "u"
    DELETE = "d"
    SEARCH = "s"


LAUNCH_SCOPES = frozenset({"launch", "launch/patient", "launch/encounter", "openid", "fhirUser", "profile",
                           "offline_access", "online_access"})

_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_V2_PERMISSIONS = re.compile(r"^(?=.)c?r?u?d?s?$")
_CLINICAL = re.compile(r"^(patient|user|system)/([A-Z][A-Za-z]+|\*)\.([a-z*]+)(\?.*)?$")


class ScopeSyntaxError(ValueError):
    """A scope string that is neither a known launch/identity scope nor a well-formed clinical scope."""


@dataclass(frozen=True)
class ClinicalScope:
    """One parsed clinical scope."""

    context: ScopeContext
    resource_type: str  # a resource type or "*"
    permissions: frozenset[Interaction]
    query: tuple[tuple[str, str], ...] = ()
    v1: bool = False
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> ClinicalScope:
        m = _CLINICAL.match(text)
        if not m:
            raise ScopeSyntaxError(f"not a SMART clinical scope: {text!r}")
        context, rtype, perms, query = m.groups()
        v1 = perms in _V1_PERMISSIONS
        letters = _V1_PERMISSIONS.get(perms, perms)
        # v2 letters must be a non-empty, duplicate-free subset of "cruds" in that order
        if not v1 and not _V2_PERMISSIONS.match(letters):
            raise ScopeSyntaxError(f"bad permissions {perms!r} in {text!r} (expected e.g. 'rs' or 'read')")
        if v1 and query:
            raise ScopeSyntaxError(f"SMART v1 scopes take no query: {text!r}")
        q = tuple(parse_qsl(query[1:], keep_blank_values=True)) if query else ()
        if query and not q:
            raise ScopeSyntaxError(f"empty query in scope {text!r}")
        return cls(ScopeContext(context), rtype, frozenset(Interaction(c) for c in letters), q, v1, text)

    def covers(self, other: ClinicalScope) -> bool:
        """Whether this scope grants at least everything ``other`` grants."""
        return (self.context == other.context
                and self.resource_type in ("*", other.resource_type)
                and other.permissions <= self.permissions
                and set(self.query) <= set(other.query))

    def permits(self, resource_type: str, interaction: Interaction,
                params: Mapping[str, str | list[str]] | None = None) -> bool:
        if self.resource_type not in ("*", resource_type) or interaction not in self.permissions:
            return False
        for name, value in self.query:
            given = (params or {}).get(name)
            values = given if isinstance(given, list) else [given] if given is not None else []
            # the request must be restricted to exactly the scope's value (every OR-ed value must match)
            if not values or any(set(v.split(",")) != {value} for v in values):
                return False
        return True


@dataclass(frozen=True)
class ScopeSet:
    """A parsed scope string: clinical scopes plus launch/identity scopes."""

    clinical: tuple[ClinicalScope, ...]
    other: frozenset[str]

    @classmethod
    def parse(cls, scope: str | Iterable[str], *, strict: bool = True) -> ScopeSet:
        """Parse a space-separated scope string. ``strict`` rejects unknown scopes; else they are dropped."""
        items = scope.split() if isinstance(scope, str) else list(scope)
        clinical: list[ClinicalScope] = []
        other: set[str] = set()
        for item in items:
            if item in LAUNCH_SCOPES:
                other.add(item)
                continue
            try:
                clinical.append(ClinicalScope.parse(item))
            except ScopeSyntaxError:
                if strict:
                    raise
        return cls(tuple(dict.fromkeys(clinical)), frozenset(other))

    def __str__(self) -> str:
        return " ".join([*(c.text for c in self.clinical), *sorted(self.other)])

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(str(self).split())

    def has(self, scope: str) -> bool:
        return scope in self.other

    def permits(self, context: ScopeContext | str, resource_type: str, interaction: Interaction | str,
                params: Mapping[str, str | list[str]] | None = None) -> bool:
        """Whether some scope of ``context`` allows ``interaction`` on ``resource_type`` with ``params``."""
        ctx, act = ScopeContext(context), Interaction(interaction)
        return any(c.context == ctx and c.permits(resource_type, act, params) for c in self.clinical)

    def restrictions(self, context: ScopeContext | str, resource_type: str,
                     interaction: Interaction | str) -> list[tuple[tuple[str, str], ...]] | None:
        """Query restrictions under which ``interaction`` is allowed: ``None`` if not at all, a list
        containing ``()`` if unrestricted, else the alternatives (one of which the request must satisfy)."""
        ctx, act = ScopeContext(context), Interaction(interaction)
        found = [c.query for c in self.clinical
                 if c.context == ctx and c.resource_type in ("*", resource_type) and act in c.permissions]
        return found or None

    def is_subset_of(self, granted: ScopeSet) -> bool:
        """Whether every scope here is covered by ``granted`` (refresh may only narrow a grant)."""
        return self.other <= granted.other and all(
            any(g.covers(c) for g in granted.clinical) for c in self.clinical)

    def narrowed_to(self, allowed: Iterable[str]) -> ScopeSet:
        """The scopes of this set whose text is in ``allowed`` (a consent page's checked boxes)."""
        keep = set(allowed)
        return ScopeSet(tuple(c for c in self.clinical if c.text in keep),
                        frozenset(o for o in self.other if o in keep))
