"""``s4s-servers lab`` (what ``make demo`` runs): the stack and JupyterLab start on loopback, the banner
says where to go and which demo login to use, the extension is configured for the stack's EHR (a full
login through it with the demo registration works), and Ctrl-C stops JupyterLab too."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from s4s_jupyter.client.automation import FormLogin


def read_until(process: subprocess.Popen[str], pattern: str, timeout: float) -> tuple[re.Match[str], str]:
    assert process.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen += line
        found = re.search(pattern, seen)
        if found:
            return found, seen
    raise AssertionError(f"no {pattern!r} in the output:\n{seen[-3000:]}")


@pytest.mark.timeout(120)
def test_lab_command_starts_stack_and_jupyterlab_and_the_extension_logs_in(tmp_path: Path) -> None:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "01-start.ipynb").write_text(json.dumps(
        {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}))
    env = {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path / "jdata"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jruntime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "jconfig")}
    command = [str(Path(sys.executable).parent / "s4s-servers"), "lab", "--data-dir", str(tmp_path / "data"),
               "--urls-file", str(tmp_path / "urls.json"), "--notebooks", str(notebooks), "--patients", "2"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        found, banner = read_until(process, r"(http://127\.0\.0\.1:(\d+)/)lab/tree/01-start\.ipynb\?token=(\w+)",
                                   90)
        lab, port, token = found.group(1), int(found.group(2)), found.group(3)
        _, rest = read_until(process, r"running; press Ctrl-C", 10)
        banner += rest
        assert "Stop with Ctrl-C" in banner
        urls = json.loads((tmp_path / "urls.json").read_text())
        assert urls["jupyterlab"] == lab
        user = urls["users"][0]
        assert f"username {user['username']}" in banner and user["password"] in banner

        # JupyterLab's environment, which its kernels inherit: the EHR and the URLs file the tutorials read
        server = json.loads(next((tmp_path / "jruntime").glob("jpserver-*.json")).read_text())
        assert server["port"] == port
        environ = dict(item.split("=", 1) for item in
                       Path(f"/proc/{server['pid']}/environ").read_text().split("\0") if "=" in item)
        assert environ["S4S_EHR_URL"] == urls["ehr_fhir"]
        assert environ["S4S_URLS_FILE"] == str((tmp_path / "urls.json").resolve())

        with httpx.Client(timeout=30) as browser:
            status = browser.get(f"{lab}s4s/api/status", headers={"Authorization": f"token {token}"})
            assert status.status_code == 200
            assert status.json()["ehr"] == urls["ehr_fhir"] and status.json()["logged_in"] is False
            # the browser's visit with the token sets Jupyter's login cookie, as the printed link does
            start = browser.get(f"{lab}s4s/login", params={"token": token}, follow_redirects=False)
            assert start.status_code == 302
            authorize = start.headers["Location"]
            assert parse_qs(urlsplit(authorize).query)["redirect_uri"] == [f"{lab}s4s/oauth/callback"]
            redirect = FormLogin(user["username"], user["password"], follow_callback=False)(authorize)
            assert redirect is not None
            done = browser.get(redirect)
            assert done.status_code == 200 and 'data-s4s-login="ok"' in done.text
            assert browser.get(f"{lab}s4s/api/status").json()["patient"] == user["patient_ids"][0]
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()
    deadline = time.monotonic() + 20
    while True:  # JupyterLab went with it: its port no longer answers
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                break
        assert time.monotonic() < deadline, "JupyterLab still running after Ctrl-C"
        time.sleep(0.2)
