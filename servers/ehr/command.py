"""EHR: SMART on FHIR authorization server and FHIR R4 API (``s4s-servers ehr``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servers.broker.settings import DICOMWEB_PATH
from servers.demo_data.plan import DemoOptions, DemoPlan, make_plan
from servers.runtime import Reservation, ServerLoop, reserve

from .app import make_app
from .oauth.clients import Client, demo_clients_path, ensure_demo_clients_file, load_clients
from .oauth.endpoints import OAuthEndpoints
from .settings import AssociatedEndpoint, EHRSettings

if TYPE_CHECKING:
    from servers.demo import DemoContext

log = logging.getLogger("s4s.ehr")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default="demo-data", help="data folder; the EHR keeps its files in DIR/ehr")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--clients", metavar="FILE",
                   help="JSON file of registered OAuth clients (default: the demo clients, created in "
                        "DIR/ehr/clients.json with fresh secrets on first start)")
    p.add_argument("--auto-approve", action="store_true",
                   help="DEMO ONLY: skip login, patient picker and consent for loopback redirect URIs")
    p.add_argument("--associated-endpoint", action="append", default=[], metavar="URL",
                   help="FHIR base of a server accepting this EHR's tokens for imaging "
                        "(listed in the SMART configuration with smart-imaging-access); repeatable")
    p.add_argument("--pacs", metavar="URL",
                   help="DICOMweb base of a PACS: the EHR then serves ImagingStudy at {ehr}/fhir and "
                        "WADO-RS/QIDO-RS at {ehr}/dicom-web itself (the broker's handlers, in-process "
                        "token checks); listed as its own imaging endpoint unless --associated-endpoint")
    p.add_argument("--patients", type=int, default=DemoOptions.patients, help="synthetic patients")
    p.add_argument("--seed", type=int, default=DemoOptions.seed, help="seed of the synthetic data")


def describe(url: str, settings: EHRSettings) -> dict[str, Any]:
    """The EHR's entries of the URLs file (DESIGN.md "Running it"); with a PACS also ``broker_fhir`` and
    ``broker_dicomweb``, both served by the EHR itself."""
    endpoints = OAuthEndpoints(url)
    out: dict[str, Any] = {
        "ehr_fhir": endpoints.fhir_base,
        "smart_configuration": endpoints.smart_configuration,
        "clients": [c.to_json() for c in settings.clients],
        "users": users_json(settings.plan),
    }
    if settings.pacs_url:  # the EHR plays the broker's role: its keys of the URLs file point here
        out["broker_fhir"] = endpoints.fhir_base
        out["broker_dicomweb"] = url.rstrip("/") + DICOMWEB_PATH
    return out


def users_json(plan: DemoPlan) -> list[dict[str, Any]]:
    return [{"username": u.username, "password": u.password, "display_name": u.display_name,
             "patient_ids": list(u.patient_ids),
             "patients": [{"id": pid, "mrn": plan.patient(pid).mrn} for pid in u.patient_ids]}
            for u in plan.users]


def serve(loop: ServerLoop, settings: EHRSettings, reservation: Reservation) -> dict[str, Any]:
    served = loop.serve(lambda url: make_app(settings, url), reservation)
    log.info("EHR at %s (FHIR base %s/fhir)", served.url, served.url)
    return describe(served.url, settings)


def demo_clients(data_dir: Path) -> tuple[Client, ...]:
    return tuple(load_clients(ensure_demo_clients_file(demo_clients_path(data_dir))))


def run(args: argparse.Namespace, loop: ServerLoop) -> dict[str, Any]:
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    clients = tuple(load_clients(args.clients)) if args.clients else demo_clients(data_dir)
    settings = EHRSettings(
        data_dir=data_dir,
        plan=make_plan(DemoOptions(seed=args.seed, patients=args.patients)),
        clients=clients,
        auto_approve=args.auto_approve,
        associated_endpoints=tuple(AssociatedEndpoint(u.rstrip("/")) for u in args.associated_endpoint),
        pacs_url=args.pacs.rstrip("/") if args.pacs else None,
    )
    return serve(loop, settings, reserve(args.host, args.port))


def start_in_demo(ctx: DemoContext, loop: ServerLoop) -> dict[str, Any]:
    """The EHR in the demo stack; names the broker (if the stack has one) as an associated endpoint."""
    associated: tuple[AssociatedEndpoint, ...] = ()
    if "broker" in ctx.reservations:
        associated = (AssociatedEndpoint(ctx.url("broker") + "/fhir"),)
    settings = EHRSettings(
        data_dir=ctx.data_dir,
        plan=ctx.plan,
        clients=demo_clients(ctx.data_dir),
        auto_approve=ctx.auto_approve,
        associated_endpoints=associated,
    )
    return serve(loop, settings, ctx.reservations["ehr"])
