"""``s4s-servers``: run the whole demo stack, or any one role alone.

Each role lives in ``servers/<role>/command.py`` with two functions: ``add_arguments(parser)`` for
``s4s-servers <role> ...`` and ``run(args, loop) -> dict`` that starts it alone and returns its URLs. A
role with a ``--processes`` option also has ``run_forked(args, announce) -> int``, used when more than one
process is asked for (:mod:`servers.prefork`). The demo stack (:mod:`servers.demo`) composes the roles in
one process.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from servers.runtime import ServerLoop, StartupError, StopSignals

#: role name -> module with add_arguments(parser) and run(args, loop)
ROLES: dict[str, str] = {
    "demo": "servers.demo",
    "lab": "servers.lab",
    "pacs": "servers.pacs.command",
    "ehr": "servers.ehr.command",
    "introspection": "servers.introspection.command",
    "broker": "servers.broker.command",
}

log = logging.getLogger("s4s.servers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s4s-servers",
        description="Reference servers for imaging research over SMART on FHIR and DICOMweb.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="role", required=True, metavar="ROLE")
    for role, module_name in ROLES.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(role, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def write_urls_file(path: str, urls: dict[str, Any]) -> None:
    """Write the URLs file atomically (scripts poll for it and must never read half a file)."""
    import os
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".urls-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(urls, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def announce(args: argparse.Namespace, urls: dict[str, Any]) -> None:
    """Write the URLs file (when asked) and print the URLs: the server is ready for clients."""
    if getattr(args, "urls_file", None):
        write_urls_file(args.urls_file, urls)
    print(json.dumps({k: v for k, v in urls.items() if k not in ("clients", "users")}, indent=2),
          flush=True)
    log.info("running; press Ctrl-C to stop")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return serve(args)
    except (StartupError, OSError) as exc:  # a port in use, a data folder in use, ...
        log.debug("start-up failed", exc_info=True)
        log.error("cannot start %s: %s", args.role, exc)
        return 1


def serve(args: argparse.Namespace) -> int:
    """Run the role ``args`` names until SIGINT or SIGTERM."""
    if getattr(args, "processes", 1) > 1:  # before any thread exists: the role forks its workers
        return int(args._module.run_forked(args, lambda urls: announce(args, urls)))
    stop = StopSignals()
    loop = ServerLoop().start()
    try:
        announce(args, args._module.run(args, loop))
        stop.wait()
        log.info("stopping")
    finally:
        loop.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
