"""Access decisions of the FHIR API: bearer token -> introspection -> SMART scopes and patient compartment.

SMART App Launch 2.x "Scopes and Launch Context"; RFC 6750 (bearer tokens); RFC 7662 (introspection).

- The token comes from the ``Authorization: Bearer`` header only. A token in the query string or a form
  body (``access_token``, RFC 6750 2.2/2.3) is refused (400) and never introspected.
- Missing, unknown, expired or revoked token: :class:`InvalidToken` (401 + ``WWW-Authenticate``). An
  answer whose ``exp`` is past is treated as inactive here too (fail closed).
- ``patient/`` and ``user/`` scopes bind every request to the token's ``patient``: a search on a
  patient-compartment type must name that patient (``patient=``/``subject=``), and only that patient, else
  403; ``Patient`` searches are filtered to that patient; reads of another patient's resources answer 404,
  like resources that do not exist. A token with such scopes but no ``patient`` gets 403. The store
  applies the compartment restriction in SQL as well, so no parameter trick can widen it.
- ``system/`` scopes (SMART Backend Services, e.g. the broker's client_credentials token) are not bound to
  a patient.
- A v2 scope with a query (``patient/Observation.rs?category=...|laboratory``) is applied as a filter:
  the answer is the intersection of the request and the scope's restriction (the union over scopes).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from s4s_jupyter.core.bearer import require_active
from s4s_jupyter.core.errors import FHIRError, FHIRForbidden, InvalidToken
from s4s_jupyter.core.introspection import IntrospectionResult
from s4s_jupyter.core.scopes import Interaction, ScopeContext, ScopeSet
from servers.ehr.fhir.query import Criterion, SearchQuery, parse_search


class Introspector(Protocol):
    """Anything that answers RFC 7662 introspection for a token (in-process or remote)."""

    def introspect(self, token: str) -> IntrospectionResult | Awaitable[IntrospectionResult]: ...


@dataclass(frozen=True)
class Grant:
    """What one request may see: ``patient`` (None: any patient) and scope restrictions (None: none)."""

    patient: str | None
    alternatives: tuple[tuple[Criterion, ...], ...] | None
    token: IntrospectionResult


async def introspect(introspector: Introspector, token: str, clock: Callable[[], float] = time.time
                     ) -> IntrospectionResult:
    """Introspect ``token``; raise :class:`InvalidToken` unless it is active and unexpired."""
    answer = introspector.introspect(token)
    result = await answer if inspect.isawaitable(answer) else answer
    if not isinstance(result, IntrospectionResult):
        raise InvalidToken("the access token is not active")
    return require_active(result, clock())


def _restrictions(scopes: ScopeSet, contexts: Sequence[ScopeContext], resource_type: str,
                  interaction: Interaction) -> list[tuple[tuple[str, str], ...]] | None:
    found: list[tuple[tuple[str, str], ...]] = []
    for ctx in contexts:
        found.extend(scopes.restrictions(ctx, resource_type, interaction) or [])
    return found or None


def _alternatives(resource_type: str, restrictions: list[tuple[tuple[str, str], ...]], fhir_base: str
                  ) -> tuple[tuple[Criterion, ...], ...] | None:
    if any(r == () for r in restrictions):
        return None
    out = []
    for restriction in restrictions:
        args: dict[str, list[str]] = {}
        for name, value in restriction:
            args.setdefault(name, []).append(value)
        try:
            q = parse_search(resource_type, args, fhir_base)
        except FHIRError:
            continue  # a restriction this server cannot evaluate grants nothing (fail closed)
        if q.unknown or not q.criteria:
            continue
        out.append(q.criteria)
    return tuple(out)


def grant_for(token: IntrospectionResult, resource_type: str, interaction: Interaction, fhir_base: str
              ) -> Grant:
    """Decide what ``token`` may do with ``interaction`` on ``resource_type``; raise 403 if nothing."""
    scopes = ScopeSet.parse(token.scope, strict=False)
    system = _restrictions(scopes, [ScopeContext.SYSTEM], resource_type, interaction)
    if system is not None:
        return Grant(None, _alternatives(resource_type, system, fhir_base), token)
    bound = _restrictions(scopes, [ScopeContext.PATIENT, ScopeContext.USER], resource_type, interaction)
    if bound is None:
        verb = "read" if interaction == Interaction.READ else "search"
        raise FHIRForbidden(f"the token's scopes do not allow {verb} on {resource_type}")
    if not token.patient:
        raise FHIRForbidden("the token has patient-level scopes but no patient in context")
    return Grant(token.patient, _alternatives(resource_type, bound, fhir_base), token)


def check_search(grant: Grant, query: SearchQuery) -> None:
    """A patient-bound search must be for the token's patient only (else 403, R4 compartments)."""
    if grant.patient is None:
        return
    if query.resource_type == "Patient":
        for group in query.ids():
            if any(i != grant.patient for i in group):
                raise FHIRForbidden("the token does not allow access to that patient")
        return
    refs = [*query.references("patient"), *query.references("subject")]
    if not refs:
        raise FHIRForbidden(f"a {query.resource_type} search with this token must name the token's patient "
                            "(patient=...)")
    for ref in refs:
        if ref.id != grant.patient or ref.type not in (None, "Patient"):
            raise FHIRForbidden("the token does not allow access to that patient")
