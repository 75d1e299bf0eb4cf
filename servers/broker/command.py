"""FHIR Broker: ImagingStudy from QIDO-RS and a guarded DICOMweb pass-through in front of a PACS
(``s4s-servers broker --pacs URL --introspection URL --ehr URL ...``)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servers.broker.app import make_app
from servers.broker.local_pacs import LocalPACS
from servers.broker.settings import BrokerSettings
from servers.client_secret import add_client_secret_arguments, client_secret
from servers.ehr.oauth.clients import BROKER_CLIENT_ID, demo_client
from servers.prefork import add_processes_argument, serve_forked
from servers.runtime import Reservation, ServerLoop, StartupError, reserve

if TYPE_CHECKING:
    from servers.demo import DemoContext

log = logging.getLogger("s4s.broker")

SECRET_ENV = "S4S_BROKER_CLIENT_SECRET"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pacs", required=True, metavar="URL",
                   help="the PACS's DICOMweb base (ours, Orthanc's http://host:8042/dicom-web, ...)")
    p.add_argument("--pacs-socket", metavar="PATH",
                   help="reach the PACS over this Unix-domain socket (same host, plain HTTP; ours: "
                        "s4s-servers pacs --unix-socket PATH); --pacs then gives the paths only")
    p.add_argument("--pacs-handoff", metavar="PATH",
                   help="hand authorized retrieves' client connections to the PACS through this Unix socket "
                        "(same host; ours: s4s-servers pacs --handoff-socket PATH): the PACS answers on them "
                        "directly, the broker leaves the data path (docs/broker.md)")
    p.add_argument("--pacs-store", metavar="DIR",
                   help="answer authorized retrieves in this process, from our PACS's data folder on the "
                        "same host (its --data-dir, opened shared, read only): no second process per "
                        "request (docs/broker.md)")
    p.add_argument("--introspection", required=True, metavar="URL",
                   help="an RFC 7662 endpoint: the token introspection service or the EHR's own")
    p.add_argument("--ehr", required=True, metavar="URL", help="the EHR's FHIR base (e.g. http://host/fhir)")
    p.add_argument("--client-id", default=BROKER_CLIENT_ID,
                   help="the broker's confidential client at the EHR")
    add_client_secret_arguments(p, SECRET_ENV)
    p.add_argument("--patient-identifier", default=BrokerSettings.patient_identifier,
                   help="which Patient.identifier is the DICOM PatientID: 'type:SYSTEM|CODE' or 'system:URI' "
                        "(default the v2-0203 MR type)")
    p.add_argument("--pacs-authorization-file", metavar="FILE",
                   help="file holding an Authorization header value for the PACS (the user's token never "
                        "goes there)")
    p.add_argument("--upstream-timeout", type=float, default=BrokerSettings.upstream_timeout,
                   help="seconds to wait for the PACS (connect, answer, next chunk)")
    p.add_argument("--introspection-cache-ttl", type=float, default=BrokerSettings.introspection_cache_ttl,
                   metavar="SECONDS",
                   help="reuse a positive introspection answer this long, never past the token's exp "
                        "(default %(default)s; 0 asks on every request)")
    add_processes_argument(p, "with --pacs-store, one per core lets concurrent retrieves use every core, "
                              "as the PACS's own workers do")
    p.add_argument("--data-dir", default="broker-data", help="folder of the audit trail (audit.jsonl)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--urls-file", help="write this role's URLs (JSON) to this file once it listens")


def describe(url: str) -> dict[str, Any]:
    return {"broker_fhir": f"{url}/fhir", "broker_dicomweb": f"{url}/dicom-web"}


def serve(loop: ServerLoop, settings: BrokerSettings, reservation: Reservation) -> dict[str, Any]:
    served = loop.serve(lambda url: make_app(settings, url), reservation)
    log.info("FHIR broker at %s/fhir, DICOMweb at %s/dicom-web, in front of %s", served.url, served.url,
             settings.pacs_url)
    return describe(served.url)


def run(args: argparse.Namespace, loop: ServerLoop) -> dict[str, Any]:
    return serve(loop, _settings(args), reserve(args.host, args.port))


def run_forked(args: argparse.Namespace, announce: Callable[[dict[str, Any]], None]) -> int:
    """Serve from ``args.processes`` worker processes on one port (:mod:`servers.prefork`), each a whole
    broker with its own caches (introspection, ownership) and its own connections; the audit trail is
    one file, each AuditEvent appended with one ``write`` (``O_APPEND``)."""
    settings = _settings(args)
    reservation = replace(reserve(args.host, args.port), shared=True)

    def worker(loop: ServerLoop) -> None:
        serve(loop, settings, reservation)

    return serve_forked(args.processes, reservation, worker, lambda pids: announce(describe(reservation.url)))


def _settings(args: argparse.Namespace) -> BrokerSettings:
    secret = client_secret(args, SECRET_ENV)
    pacs_auth = (Path(args.pacs_authorization_file).read_text().strip()
                 if args.pacs_authorization_file else None)
    if (args.pacs_socket or args.pacs_handoff) and not args.pacs.startswith("http://"):
        raise StartupError("--pacs-socket and --pacs-handoff carry plain HTTP: --pacs must be an http:// URL")
    if args.pacs_store and args.pacs_handoff:
        raise StartupError("--pacs-store and --pacs-handoff are two ways to answer the same retrieves: "
                           "give one")
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = BrokerSettings(
        pacs_url=args.pacs.rstrip("/"), ehr_fhir=args.ehr.rstrip("/"), introspection_url=args.introspection,
        client_id=args.client_id, client_secret=secret, patient_identifier=args.patient_identifier,
        data_dir=data_dir, upstream_timeout=args.upstream_timeout, upstream_authorization=pacs_auth,
        introspection_cache_ttl=max(0.0, args.introspection_cache_ttl),
        pacs_socket=str(Path(args.pacs_socket).resolve()) if args.pacs_socket else None,
        pacs_handoff=str(Path(args.pacs_handoff).resolve()) if args.pacs_handoff else None,
        pacs_store=Path(args.pacs_store).resolve() if args.pacs_store else None)
    if settings.pacs_store is not None:
        LocalPACS.check(settings.pacs_store, settings.pacs_url)  # before any worker starts
    return settings


def start_in_demo(ctx: DemoContext, loop: ServerLoop) -> dict[str, Any]:
    """The broker in the demo stack: in front of the demo PACS, asking the introspection service."""
    client = demo_client(ctx.data_dir, BROKER_CLIENT_ID)
    settings = BrokerSettings(
        pacs_url=ctx.url("pacs") + "/dicom-web", ehr_fhir=ctx.url("ehr") + "/fhir",
        introspection_url=ctx.url("introspection") + "/introspect", client_id=client.client_id,
        client_secret=client.client_secret or "", data_dir=ctx.data_dir / "broker")
    return serve(loop, settings, ctx.reservations["broker"])
