"""Run every role of the demo stack on loopback in one process (``s4s-servers demo``).

The data folder holds each role's store; the deterministic synthetic data set
(:mod:`servers.demo_data`) is generated into it on first start. Every role's port is reserved before
any app is built, so each role knows the others' URLs (the EHR names the broker in its SMART
configuration; the broker asks the introspection service; ...).
"""

from __future__ import annotations

import argparse
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers.demo_data.plan import DemoOptions, DemoPlan, make_plan
from servers.runtime import Reservation, ServerLoop, reserve

log = logging.getLogger("s4s.demo")

#: the roles of the stack, in start order; each module has start_in_demo(ctx, loop) -> dict of URLs
DEMO_ROLES: dict[str, str] = {
    "pacs": "servers.pacs.command",
    "ehr": "servers.ehr.command",
    "introspection": "servers.introspection.command",
    "broker": "servers.broker.command",
}


@dataclass
class DemoContext:
    """What every role needs to take its place in the stack."""

    data_dir: Path
    plan: DemoPlan
    host: str = "127.0.0.1"
    auto_approve: bool = False
    reservations: dict[str, Reservation] = field(default_factory=dict)

    def url(self, role: str) -> str:
        return self.reservations[role].url


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default="demo-data", help="folder for the stores (default ./demo-data)")
    p.add_argument("--urls-file", help="write a JSON object with every URL of the stack to this file")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0,
                   help="first port; the roles take consecutive ports from it (default: free ports)")
    p.add_argument("--auto-approve", action="store_true",
                   help="DEMO ONLY: the EHR skips login and consent for loopback redirect URIs")
    p.add_argument("--patients", type=int, default=DemoOptions.patients, help="synthetic patients")
    p.add_argument("--seed", type=int, default=DemoOptions.seed, help="seed of the synthetic data")


def start_stack(ctx: DemoContext, loop: ServerLoop, first_port: int = 0) -> dict[str, Any]:
    """Reserve ports for every role, start them in order, and return the URLs file's content."""
    for n, role in enumerate(DEMO_ROLES):
        if role not in ctx.reservations:
            ctx.reservations[role] = reserve(ctx.host, first_port + n if first_port else 0)
    urls: dict[str, Any] = {}
    for module_name in DEMO_ROLES.values():
        module = importlib.import_module(module_name)
        urls.update(module.start_in_demo(ctx, loop))
    return urls


def run(args: argparse.Namespace, loop: ServerLoop) -> dict[str, Any]:
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    plan = make_plan(DemoOptions(seed=args.seed, patients=args.patients))
    ctx = DemoContext(data_dir=data_dir, plan=plan, host=args.host, auto_approve=args.auto_approve)
    return start_stack(ctx, loop, args.port)
