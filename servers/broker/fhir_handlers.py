"""The broker's FHIR R4 API (``{broker}/fhir``): ImagingStudy search and read, Endpoint read,
``/metadata`` and ``/.well-known/smart-configuration``.

Search (FHIR R4 3.1.1 "Search"; SMART Imaging Access "Finding studies"): ``patient`` (required; ``123``,
``Patient/123`` or an absolute reference), ``identifier`` (``urn:dicom:uid|<uid>``, ``urn:oid:<uid>``;
comma = OR), ``_lastUpdated`` (repeatable, AND; the study's StudyDate/StudyTime, see docs/broker.md),
``_include=ImagingStudy:endpoint``, ``_count`` and ``_getpagesoffset`` (paging through ``next``
links). Unknown parameters are a 400 unless the client sends ``Prefer: handling=lenient`` (R4 3.1.1.5.x).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from s4s_jupyter.core.errors import FHIRError, FHIRNotFound
from s4s_jupyter.core.imaging_study import parse_identifier
from s4s_jupyter.core.scopes import Interaction
from s4s_jupyter.core.uids import is_valid_uid
from servers.base import FHIR_JSON, FHIRHandler
from servers.broker.guard import GuardedMixin
from servers.broker.patients import FHIR_ID
from servers.broker.service import DateRange, StudySearch

SEARCH_PARAMS = {"patient", "subject", "identifier", "_lastUpdated", "_include", "_count", "_getpagesoffset",
                 "_format"}
INCLUDE_ENDPOINT = ("ImagingStudy:endpoint", "ImagingStudy:endpoint:Endpoint")
JSON_FORMATS = ("json", "application/json", "application/fhir+json")


def _check_format(handler: FHIRHandler) -> None:
    fmt = handler.get_query_argument("_format", None)
    if fmt is not None and fmt.split(";")[0].strip() not in JSON_FORMATS:
        raise FHIRError("only JSON is supported (_format=json)", status=406, code="not-supported")
    accept = handler.request.headers.get("Accept", "")
    if accept and not any(m.split(";")[0].strip() in ("*/*", "application/*", "application/json",
                                                      "application/fhir+json", "application/json+fhir")
                          for m in accept.split(",")):
        raise FHIRError("only application/fhir+json is supported", status=406, code="not-supported")


def _patient_id(reference: str) -> str:
    """The logical id of a ``patient`` search value: ``id``, ``Patient/id`` or ``http...Patient/id``."""
    ref = reference.strip()
    if "/" in ref:
        head, _, rid = ref.rpartition("/")
        if not head.endswith("Patient"):
            raise FHIRError(f"patient must reference a Patient, not {reference!r}")
        ref = rid
    if not FHIR_ID.match(ref):
        raise FHIRError(f"patient {reference!r} is not a valid FHIR id")
    return ref


class FHIRBase(GuardedMixin, FHIRHandler):
    def write_resource(self, resource: dict[str, Any]) -> None:
        self.set_header("Content-Type", FHIR_JSON)
        self.set_header("Cache-Control", "no-store")
        self.write_json(resource, content_type=FHIR_JSON)


class ImagingStudySearchHandler(FHIRBase):
    async def get(self) -> None:
        self.start_audit("search")
        result = await self.introspect()
        _check_format(self)
        args = {k: [v.decode("utf-8", "replace") for v in vals]
                for k, vals in self.request.query_arguments.items()}
        lenient = "handling=lenient" in self.request.headers.get("Prefer", "").replace(" ", "")
        unknown = sorted(set(args) - SEARCH_PARAMS)
        if unknown and not lenient:
            raise FHIRError(f"search parameter(s) not supported: {', '.join(unknown)}")
        refs = args.get("patient", []) + args.get("subject", [])
        if len(refs) != 1 or "," in refs[0]:
            raise FHIRError("exactly one patient (or subject) is required")
        patient = _patient_id(refs[0])
        # commas within one identifier parameter are OR, repeated parameters are AND (R4 3.1.1.5.x)
        wanted: set[str] | None = None
        for value in args.get("identifier", []):
            one = {parse_identifier(v) for v in value.split(",")}
            wanted = one if wanted is None else wanted & one
        uids = sorted(wanted or ())
        empty = wanted is not None and not wanted
        ranges = tuple(DateRange.parse(v) for v in args.get("_lastUpdated", []))
        includes = args.get("_include", [])
        if any(i not in INCLUDE_ENDPOINT for i in includes):
            raise FHIRError("only _include=ImagingStudy:endpoint is supported")
        settings = self.ctx.settings
        count = self._int(args, "_count", settings.default_page_size, 0, settings.max_page_size)
        offset = self._int(args, "_getpagesoffset", 0, 0, 10**9)
        honoured: dict[str, str | list[str]] = {"patient": refs[0]}
        if "identifier" in args:
            honoured["identifier"] = args["identifier"]
        if "_lastUpdated" in args:
            honoured["_lastUpdated"] = args["_lastUpdated"]
        access = await self.access(Interaction.SEARCH, patient=patient, params=honoured, result=result)
        if empty:
            page_resources: list[dict[str, Any]] = []
            total = 0
        else:
            page = await self.ctx.service.search(StudySearch(access.patient, tuple(uids),
                                                             ranges, count, offset))
            page_resources, total = page.resources, page.total
        if count == 0:
            page_resources = []
        self.write_resource(self._bundle(args, page_resources, total, count, offset, bool(includes)))

    @staticmethod
    def _int(args: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
        vals = args.get(name)
        if not vals:
            return default
        try:
            value = int(vals[-1])
        except ValueError:
            raise FHIRError(f"{name} must be an integer") from None
        if value < low:
            raise FHIRError(f"{name} must be at least {low}")
        return min(value, high)

    def _link(self, args: dict[str, list[str]], **override: int) -> str:
        pairs = [(k, v) for k, vals in args.items() if k not in override for v in vals]
        pairs += [(k, str(v)) for k, v in override.items()]
        return f"{self.ctx.fhir_base}/ImagingStudy?{urlencode(pairs)}"

    def _bundle(self, args: dict[str, list[str]], resources: list[dict[str, Any]], total: int, count: int,
                offset: int, include: bool) -> dict[str, Any]:
        links = [{"relation": "self", "url": self._link(args, _count=count, _getpagesoffset=offset)}]
        if count and offset + count < total:
            links.append({"relation": "next",
                          "url": self._link(args, _count=count, _getpagesoffset=offset + count)})
        if count and offset > 0:
            links.append({"relation": "previous",
                          "url": self._link(args, _count=count, _getpagesoffset=max(offset - count, 0))})
        entries: list[dict[str, Any]] = [
            {"fullUrl": f"{self.ctx.fhir_base}/ImagingStudy/{r['id']}", "resource": r,
             "search": {"mode": "match"}} for r in resources]
        if include and resources:
            ep = self.ctx.endpoint
            entries.append({"fullUrl": f"{self.ctx.fhir_base}/Endpoint/{ep['id']}", "resource": ep,
                            "search": {"mode": "include"}})
        return {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links,
                "entry": entries}


class ImagingStudyReadHandler(FHIRBase):
    async def get(self, rid: str) -> None:
        self.start_audit("read")
        result = await self.introspect()
        _check_format(self)
        if self.record is not None and is_valid_uid(rid):
            self.record.study_uid = rid
        access = await self.access(Interaction.READ, result=result)
        if not is_valid_uid(rid):
            raise FHIRNotFound(f"ImagingStudy/{rid} is not known")
        self.write_resource(await self.ctx.service.read(access.patient, rid))


class EndpointReadHandler(FHIRBase):
    async def get(self, rid: str) -> None:
        await self.access(Interaction.READ)
        _check_format(self)
        if rid != self.ctx.endpoint["id"]:
            raise FHIRNotFound(f"Endpoint/{rid} is not known")
        self.write_resource(self.ctx.endpoint)


def capability_resources() -> list[dict[str, Any]]:
    """The broker's ``rest.resource`` entries (ImagingStudy, Endpoint) of a CapabilityStatement; the EHR
    lists the same ones when it mounts the broker's handlers."""
    search_params = [
        {"name": "patient", "type": "reference", "documentation": "required"},
        {"name": "identifier", "type": "token", "documentation": "urn:dicom:uid|<uid> or urn:oid:<uid>"},
        {"name": "_lastUpdated", "type": "date", "documentation": "the study's StudyDate/StudyTime"},
        {"name": "_count", "type": "number"},
    ]
    return [
        {"type": "ImagingStudy", "interaction": [{"code": "read"}, {"code": "search-type"}],
         "searchInclude": ["ImagingStudy:endpoint"], "searchParam": search_params},
        {"type": "Endpoint", "interaction": [{"code": "read"}]},
    ]


class MetadataHandler(FHIRBase):
    """``GET /metadata``: the CapabilityStatement (FHIR R4 3.1.0.4 "capabilities")."""

    async def get(self) -> None:
        security: dict[str, Any] = {
            "cors": False,
            "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                     "code": "SMART-on-FHIR"}]}],
            "description": "SMART App Launch bearer tokens, introspected (RFC 7662) on every request",
        }
        if self.ctx.ehr is not None:
            config = await self.ctx.ehr.smart_configuration()
            ext = [{"url": name, "valueUri": config[key]} for name, key in (
                ("authorize", "authorization_endpoint"), ("token", "token_endpoint"),
                ("introspect", "introspection_endpoint"), ("revoke", "revocation_endpoint"))
                if isinstance(config.get(key), str)]
            security["extension"] = [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                                      "extension": ext}]
        self.write_json({
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-01-01",
            "kind": "instance",
            "software": {"name": "s4s-jupyter FHIR broker"},
            "implementation": {"description": "ImagingStudy from QIDO-RS, guarded DICOMweb",
                               "url": self.ctx.fhir_base},
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [{
                "mode": "server",
                "security": security,
                "resource": capability_resources(),
            }],
        }, content_type=FHIR_JSON)


class SmartConfigurationHandler(FHIRBase):
    """The broker's ``.well-known/smart-configuration``: the EHR's, since the EHR issues the tokens
    (SMART App Launch 2.x "Metadata"; SMART Imaging Access "Discovery")."""

    async def get(self) -> None:
        if self.ctx.ehr is None:
            raise FHIRNotFound("no SMART configuration here")
        config = dict(await self.ctx.ehr.smart_configuration())
        config.pop("associated_endpoints", None)
        caps = [c for c in config.get("capabilities", []) if isinstance(c, str)]
        for cap in ("smart-imaging-access", "http://fhir.org/argonaut/smart-imaging/capabilities/app-launch"):
            if cap not in caps:
                caps.append(cap)
        config["capabilities"] = caps
        self.write_json(config)
