"""The confidential-client secret of a role that calls the EHR (broker, introspection service): from
``--client-secret``, ``--client-secret-file`` or an environment variable, in that order."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_client_secret_arguments(p: argparse.ArgumentParser, env: str) -> None:
    """``--client-secret`` and ``--client-secret-file``; ``env`` names the variable read otherwise."""
    p.add_argument("--client-secret", help=f"the client secret (visible to other local users in the "
                   f"process list: prefer --client-secret-file or {env})")
    p.add_argument("--client-secret-file", metavar="FILE",
                   help=f"file holding the client secret (or set {env})")


def client_secret(args: argparse.Namespace, env: str) -> str:
    """The secret the options of :func:`add_client_secret_arguments` give ("" when none does)."""
    if args.client_secret:
        return str(args.client_secret)
    if args.client_secret_file:
        return Path(args.client_secret_file).read_text().strip()
    return os.environ.get(env, "")
