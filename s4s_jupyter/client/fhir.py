"""FHIR R4 search into pandas (FHIR R4 3.1.1 "Search", 3.1.1.5.6 paging), and the Sync for Science calls.

:class:`FHIRClient` runs a search, follows the Bundle's ``next`` links (only on the server's own origin, so
the token never goes elsewhere), and returns either the raw resources (:meth:`~FHIRClient.resources`) or a
DataFrame with the columns of :mod:`s4s_jupyter.client.flatten` (:meth:`~FHIRClient.search`).
:data:`CATEGORIES` names the Sync for Science data categories (R4 forms) and :class:`IncrementalSync` asks
each only for what changed since its previous call (``_lastUpdated=gt{instant}``, R4 3.1.1.5.1).
"""

from __future__ import annotations

import email.utils
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from s4s_jupyter.client import flatten
from s4s_jupyter.client.retry import RETRY_STATUSES, RetryPolicy
from s4s_jupyter.core.errors import ClientError

if TYPE_CHECKING:
    import pandas as pd

FHIR_JSON = "application/fhir+json"
#: page size asked for when the caller does not say (servers may give fewer)
DEFAULT_COUNT = 100
#: how many pages a search follows at most (a guard against a server that links pages in a circle)
MAX_PAGES = 10_000

Param = str | int | float | date | datetime | Sequence[str]


@dataclass(frozen=True)
class Category:
    """One Sync for Science data category: a resource type and fixed search parameters."""

    name: str
    resource_types: tuple[str, ...]
    params: tuple[tuple[str, str], ...] = ()


LOINC = "http://loinc.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
#: The Sync for Science calls (DESIGN.md "The flow" 4), by the name of the kit's call.
CATEGORIES: dict[str, Category] = {c.name: c for c in (
    Category("conditions", ("Condition",)),
    Category("medications", ("MedicationRequest", "MedicationStatement")),
    Category("allergies", ("AllergyIntolerance",)),
    Category("labs", ("Observation",), (("category", f"{OBS_CATEGORY}|laboratory"),)),
    Category("vitals", ("Observation",), (("category", f"{OBS_CATEGORY}|vital-signs"),)),
    Category("smoking_status", ("Observation",), (("code", f"{LOINC}|72166-2"),)),
    Category("procedures", ("Procedure",)),
    Category("immunizations", ("Immunization",)),
    Category("documents", ("DocumentReference",)),
    Category("radiology_reports", ("DiagnosticReport",),
             (("category", "http://terminology.hl7.org/CodeSystem/v2-0074|RAD"),)),
)}


def fhir_instant(value: datetime) -> str:
    """A FHIR ``instant`` (UTC, ``Z``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _param_values(value: Param) -> list[str]:
    if isinstance(value, datetime):
        return [fhir_instant(value)]
    if isinstance(value, date):
        return [value.isoformat()]
    if isinstance(value, str | int | float):
        return [str(value)]
    return [str(v) for v in value]


class SearchResults(list[dict[str, Any]]):
    """The matches of a search (a plain list of resources, ``search.mode`` ``match``), and in
    :attr:`included` the other resources of the searchset Bundles: those ``_include`` and
    ``_revinclude`` added (``search.mode`` ``include``, FHIR R4 3.1.1.5.4) and any OperationOutcome
    (``outcome``), in the order the pages gave them."""

    def __init__(self, matches: Iterable[dict[str, Any]] = (),
                 included: Iterable[dict[str, Any]] = ()) -> None:
        super().__init__(matches)
        self.included: list[dict[str, Any]] = list(included)

    def __repr__(self) -> str:
        return f"SearchResults({list.__repr__(self)}, included={self.included!r})"


def operation_outcome_text(body: Any) -> str:
    """The diagnostics of an OperationOutcome (R4 3.1.0.5), or the text."""
    if isinstance(body, Mapping) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(str(i.get("diagnostics") or i.get("code")) for i in body.get("issue") or [])
    return str(body)[:300]


class FHIRClient:
    """Searches one FHIR R4 server; ``http`` carries the authentication (:class:`BearerAuth`).

    Reads are retried as WADO-RS retrievals are (:class:`~s4s_jupyter.client.retry.RetryPolicy`): after
    ``429`` or ``503`` when the server's ``Retry-After`` says (R4 3.1.0.4.2 lets a server answer a busy
    search so; RFC 9110 10.2.3), after other ``5xx`` and connection errors with exponential back-off.
    """

    def __init__(self, http: httpx.Client, base: str, retry: RetryPolicy | None = None) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self._origin = urlsplit(self.base)[:2]
        self.retry = retry or RetryPolicy()

    def _get(self, url: str, params: Any = None) -> httpx.Response:
        if urlsplit(url)[:2] != self._origin:
            raise ClientError(f"the server linked to another origin ({url.split('?')[0]}); not following it "
                              "with the access token", status=502)
        retry = self.retry
        for attempt in range(retry.max_attempts):
            last = attempt + 1 >= retry.max_attempts
            try:
                response = self.http.get(url, params=params, headers={"Accept": FHIR_JSON})
            except httpx.TransportError as exc:
                if last:
                    raise ClientError(f"GET {url.split('?')[0]} failed after {retry.max_attempts} attempts: "
                                      f"{type(exc).__name__}: {exc}", status=502) from exc
                retry.sleep(retry.delay(None, None, attempt))
                continue
            if response.status_code == 200:
                return response
            if response.status_code in RETRY_STATUSES and not last:
                retry.sleep(retry.delay(response.status_code, response.headers.get("Retry-After"), attempt))
                continue
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            tried = f" (after {attempt + 1} attempts)" if attempt else ""
            raise ClientError(f"GET {url.split('?')[0]} answered {response.status_code}{tried}: "
                              f"{operation_outcome_text(body)}", status=response.status_code, body=body)
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """``GET [base]/{type}/{id}`` (R4 3.1.0.1.1 read)."""
        data: dict[str, Any] = self._get(f"{self.base}/{resource_type}/{resource_id}").json()
        return data

    def bundle_pages(self, resource_type: str, params: Mapping[str, Param | None] | None = None
                     ) -> list[tuple[dict[str, Any], httpx.Response]]:
        """Every page of a search: ``(Bundle, response)`` pairs, following ``next`` links."""
        query = [(k, v) for k, value in (params or {}).items() if value is not None
                 for v in _param_values(value)]
        if not any(k == "_count" for k, _ in query):
            query.append(("_count", str(DEFAULT_COUNT)))
        pages: list[tuple[dict[str, Any], httpx.Response]] = []
        url: str | None = f"{self.base}/{resource_type}"
        seen: set[str] = set()
        first = True
        while url and len(pages) < MAX_PAGES:
            response = self._get(url, query if first else None)
            first = False
            bundle = response.json()
            if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
                raise ClientError(f"search of {resource_type} did not answer a Bundle", status=502)
            pages.append((bundle, response))
            url = next((str(link["url"]) for link in bundle.get("link") or []
                        if link.get("relation") == "next" and link.get("url")), None)
            if url in seen:
                break
            if url:
                seen.add(url)
        return pages

    def entries(self, resource_type: str, params: Mapping[str, Param | None] | None = None
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(matches, included)``: the resources of every page, split by ``search.mode``."""
        matches: list[dict[str, Any]] = []
        included: list[dict[str, Any]] = []
        for bundle, _ in self.bundle_pages(resource_type, params):
            for entry in bundle.get("entry") or []:
                resource = entry.get("resource")
                if not isinstance(resource, dict):
                    continue
                mode = (entry.get("search") or {}).get("mode", "match")
                (included if mode == "include" or resource.get("resourceType") == "OperationOutcome"
                 else matches).append(resource)
        return matches, included

    def resources(self, resource_type: str, **params: Param | None) -> SearchResults:
        """The raw resources of ``GET [base]/{resource_type}?{params}``, every page: a list of the matches,
        whose ``included`` holds what ``_include``/``_revinclude`` brought (:class:`SearchResults`).

        Parameter values may be strings, numbers, dates/datetimes (written as FHIR dates/instants) or
        lists (the parameter repeated: ``date=["ge2020", "lt2021"]``).
        """
        return SearchResults(*self.entries(resource_type, params))

    def search(self, resource_type: str, **params: Param | None) -> pd.DataFrame:
        """:meth:`resources` as a DataFrame (columns: :func:`s4s_jupyter.client.flatten.columns`)."""
        return flatten.to_frame(self.resources(resource_type, **params), resource_type)

    def category(self, name: str, patient: str | None, **params: Param | None) -> pd.DataFrame:
        """One Sync for Science category for ``patient`` (see :data:`CATEGORIES`)."""
        import pandas as pd

        cat = CATEGORIES[name]
        frames = []
        for rtype in cat.resource_types:
            query: dict[str, Param | None] = {**dict(cat.params), "patient": patient, **params}
            frames.append(self.search(rtype, **query))
        if len(frames) == 1:
            return frames[0]
        return pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)

    def server_time(self, response: httpx.Response, bundle: Mapping[str, Any]) -> datetime | None:
        """When the server answered: the Bundle's ``meta.lastUpdated``, else the ``Date`` header."""
        stamp = (bundle.get("meta") or {}).get("lastUpdated")
        if isinstance(stamp, str):
            try:
                return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            except ValueError:
                pass
        header = response.headers.get("Date")
        if header:
            try:
                return email.utils.parsedate_to_datetime(header)
            except (TypeError, ValueError):
                return None
        return None


class IncrementalSync:
    """Sync for Science incremental sync: each call asks only for resources changed since the previous
    call of the same category and patient (``_lastUpdated=gt{instant}``).

    The instant is the server's own clock at the previous search (Bundle ``meta.lastUpdated`` or the
    ``Date`` header), so client clock skew cannot lose changes; a change made while a search runs may come
    twice, never not at all. ``state_file`` (optional) keeps the instants between sessions.
    """

    def __init__(self, fhir: FHIRClient, state_file: str | Path | None = None) -> None:
        self.fhir = fhir
        self.state_file = Path(state_file) if state_file else None
        self._lock = threading.Lock()
        self.since: dict[str, str] = {}
        if self.state_file and self.state_file.exists():
            self.since = dict(json.loads(self.state_file.read_text()))

    def __call__(self, patient: str | None, categories: Sequence[str] | None = None
                 ) -> dict[str, pd.DataFrame]:
        """What changed in each category (all of :data:`CATEGORIES` by default) since the last call."""
        import pandas as pd

        out: dict[str, pd.DataFrame] = {}
        for name in categories or list(CATEGORIES):
            cat = CATEGORIES[name]
            key = f"{patient}|{name}"
            frames = []
            newest: datetime | None = None
            for rtype in cat.resource_types:
                params: dict[str, Param | None] = {**dict(cat.params), "patient": patient}
                if key in self.since:
                    params["_lastUpdated"] = f"gt{self.since[key]}"
                resources: list[dict[str, Any]] = []
                for bundle, response in self.fhir.bundle_pages(rtype, params):
                    if newest is None:
                        newest = self.fhir.server_time(response, bundle)
                    resources += [e["resource"] for e in bundle.get("entry") or []
                                  if (e.get("search") or {}).get("mode", "match") == "match"
                                  and isinstance(e.get("resource"), dict)]
                frames.append(flatten.to_frame(resources, rtype))
            out[name] = frames[0] if len(frames) == 1 else pd.concat(
                [f for f in frames if len(f)] or frames[:1], ignore_index=True)
            if newest is not None:
                with self._lock:
                    self.since[key] = fhir_instant(newest)
        if self.state_file:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.state_file.write_text(json.dumps(self.since, indent=1, sort_keys=True))
        return out
