"""The demo stack and JupyterLab together, on loopback (``s4s-servers lab``; ``make demo``).

The stack (:mod:`servers.demo`) runs in this process; JupyterLab runs as a child process with the
s4s_jupyter server extension enabled and configured for the stack's EHR, its root folder the tutorials
(``notebooks/``). Kernels inherit ``S4S_EHR_URL``, ``S4S_URLS_FILE`` (the stack's URLs file, which the
tutorials read) and the extension's ``S4S_JUPYTER_BASE_URL``, so a notebook connects with
``s4s.connect(os.environ["S4S_EHR_URL"])`` and signs in through the extension.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers import demo
from servers.runtime import ServerLoop

log = logging.getLogger("s4s.lab")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    demo.add_arguments(p)
    p.add_argument("--lab-port", type=int, default=0, help="JupyterLab's port (default: a free one)")
    p.add_argument("--notebooks", default=str(NOTEBOOKS),
                   help="JupyterLab's root folder (default: the tutorials in notebooks/)")


@dataclass
class Lab:
    """A running JupyterLab child process."""

    process: subprocess.Popen[bytes]
    url: str  # http://127.0.0.1:PORT/ (the server's base URL)
    token: str = field(repr=False)
    open_path: str = "lab"

    @property
    def browser_url(self) -> str:
        """Where to go: the first tutorial (or the Lab), with the login token."""
        return f"{self.url}{self.open_path}?token={self.token}"

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def jupyter_config(urls: dict[str, Any], *, host: str, port: int, root_dir: Path) -> dict[str, Any]:
    """The Jupyter server configuration of the demo: loopback only, the extension on, the stack's EHR."""
    return {
        "ServerApp": {"ip": host, "port": port, "port_retries": 0, "open_browser": False,
                      "root_dir": str(root_dir), "allow_remote_access": False,
                      # containers and CI run as root; the server stays on loopback behind a token
                      "allow_root": hasattr(os, "geteuid") and os.geteuid() == 0,
                      "jpserver_extensions": {"s4s_jupyter.serverext": True}},
        "S4SExtension": {"ehr_url": urls["ehr_fhir"], "client_id": "s4s-jupyter"},
        # the demo stays on loopback: no announcements or update checks from the internet
        "LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"},
    }


def start_lab(urls: dict[str, Any], *, config_dir: Path, root_dir: Path, host: str = "127.0.0.1",
              port: int = 0, env: dict[str, str] | None = None, timeout: float = 90.0,
              stdout: Any = None) -> Lab:
    """Start JupyterLab configured for the stack ``urls`` describes; wait until it answers."""
    port = port or _free_port(host)
    token = secrets.token_hex(24)
    config_dir.mkdir(parents=True, exist_ok=True)
    config_file = config_dir / "jupyter_server_config.json"
    config = jupyter_config(urls, host=host, port=port, root_dir=root_dir)
    config_file.write_text(json.dumps(config, indent=2))
    child_env = {**os.environ, **(env or {}), "JUPYTER_TOKEN": token, "S4S_EHR_URL": urls["ehr_fhir"]}
    jupyter = shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) or "jupyter-lab"
    process = subprocess.Popen([jupyter, f"--config={config_file}"], env=child_env,
                               stdout=stdout, stderr=subprocess.STDOUT if stdout else None,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    tutorials = sorted(p.name for p in root_dir.glob("*.ipynb"))
    lab = Lab(process, f"http://{host}:{port}/", token,
              f"lab/tree/{tutorials[0]}" if tutorials else "lab")
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with status {process.returncode}")
        with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(
                f"{lab.url}api/status?token={token}", timeout=2) as r:
            if r.status == 200:
                return lab
        if time.monotonic() > deadline:
            lab.stop()
            raise TimeoutError(f"JupyterLab did not answer at {lab.url} within {timeout:.0f} s")
        time.sleep(0.25)


def banner(urls: dict[str, Any], lab: Lab) -> str:
    """What to print: where to go and which demo login to use."""
    lines = ["", "s4s-jupyter demo is running (loopback only). Open JupyterLab:", f"    {lab.browser_url}",
             ""]
    users = urls.get("users") or []
    if users:
        lines.append("Sign in at the EHR (the notebook's 'Sign in at the EHR' button) as one of:")
        for u in users[:3]:
            lines.append(f"    username {u['username']!s:10} password {u['password']!s:12} "
                         f"patients {', '.join(u.get('patient_ids', []))}")
    lines += [f"EHR FHIR base: {urls['ehr_fhir']}  (S4S_EHR_URL in the notebooks' kernels)",
              "Stop with Ctrl-C.", ""]
    return "\n".join(lines)


def run(args: argparse.Namespace, loop: ServerLoop) -> dict[str, Any]:
    urls = demo.run(args, loop)
    data_dir = Path(args.data_dir).resolve()
    root = Path(args.notebooks).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # the tutorials read the stack's URLs file (S4S_URLS_FILE; written by the CLI when this returns)
    env = {"S4S_URLS_FILE": str(Path(args.urls_file).resolve())} if getattr(args, "urls_file", None) else {}
    lab = start_lab(urls, config_dir=data_dir / "jupyter", root_dir=root, host=args.host, port=args.lab_port,
                    env=env)
    atexit.register(lab.stop)
    print(banner(urls, lab), flush=True)
    return {**urls, "jupyterlab": lab.url}
