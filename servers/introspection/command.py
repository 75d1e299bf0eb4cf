"""Token Introspection Service: RFC 7662 ``/introspect`` for resource servers, answered by the EHR
(``s4s-servers introspection``)."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from servers.client_secret import add_client_secret_arguments, client_secret
from servers.ehr.oauth.clients import (
    INTROSPECTION_CLIENT_ID,
    demo_clients_path,
    ensure_demo_clients_file,
    load_clients,
)
from servers.introspection.app import make_app
from servers.introspection.settings import IntrospectionSettings, Mode
from servers.runtime import Reservation, ServerLoop, reserve

if TYPE_CHECKING:
    from servers.demo import DemoContext

log = logging.getLogger("s4s.introspection")

SECRET_ENV = "S4S_INTROSPECTION_CLIENT_SECRET"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ehr", required=True, metavar="URL", help="the EHR's FHIR base (e.g. http://host/fhir)")
    p.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.AUTO.value,
                   help="relay to the EHR's introspection endpoint, use its FHIR API as the oracle, or "
                        "auto (relay when the EHR's smart-configuration names an introspection endpoint)")
    p.add_argument("--client-id", default=INTROSPECTION_CLIENT_ID,
                   help="this service's confidential client at the EHR (relay mode)")
    add_client_secret_arguments(p, SECRET_ENV)
    p.add_argument("--callers", metavar="FILE", required=True,
                   help="JSON clients file ({\"clients\": [...]}, the EHR's format): the confidential "
                        "clients that may call /introspect")
    p.add_argument("--cache-ttl", type=float, default=IntrospectionSettings.cache_ttl,
                   help="seconds a positive answer is reused (never past exp)")
    p.add_argument("--oracle-scope", default=IntrospectionSettings.oracle_scope,
                   help="scope reported for tokens the FHIR oracle finds active")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--urls-file", help="write this role's URLs (JSON) to this file once it listens")


def serve(loop: ServerLoop, settings: IntrospectionSettings, reservation: Reservation) -> dict[str, Any]:
    served = loop.serve(lambda url: make_app(settings, url), reservation)
    log.info("token introspection service at %s/introspect (mode %s)", served.url, settings.mode.value)
    return {"introspection": f"{served.url}/introspect"}


def run(args: argparse.Namespace, loop: ServerLoop) -> dict[str, Any]:
    settings = IntrospectionSettings(
        ehr_fhir=args.ehr.rstrip("/"), mode=Mode(args.mode), client_id=args.client_id,
        client_secret=client_secret(args, SECRET_ENV), callers=tuple(load_clients(args.callers)),
        cache_ttl=args.cache_ttl, oracle_scope=args.oracle_scope)
    return serve(loop, settings, reserve(args.host, args.port))


def start_in_demo(ctx: DemoContext, loop: ServerLoop) -> dict[str, Any]:
    """The service in the demo stack: relays to the demo EHR with the demo's introspection client; the
    demo's confidential clients (the broker) may call it."""
    clients = tuple(load_clients(ensure_demo_clients_file(demo_clients_path(ctx.data_dir))))
    own = next(c for c in clients if c.client_id == INTROSPECTION_CLIENT_ID)
    settings = IntrospectionSettings(
        ehr_fhir=ctx.url("ehr") + "/fhir", mode=Mode.AUTO, client_id=own.client_id,
        client_secret=own.client_secret or "", callers=clients)
    return serve(loop, settings, ctx.reservations["introspection"])
