"""The sign-in pages in a real browser: headless Chromium (Debian's, driven by Playwright) signs in,
picks a patient, unticks a scope, approves, and lands on a loopback redirect listener with code+state."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.ehr.conftest import RunningEHR

from .browserless import callback_params, launch_params
from .helpers import exchange

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class Listener(BaseHTTPRequestHandler):
    """The app's loopback redirect endpoint (RFC 8252 7.3): records what it receives."""

    received: list[str]

    def do_GET(self) -> None:
        self.server.received.append(self.path)  # type: ignore[attr-defined]
        body = b"<!doctype html><title>done</title><p>You can close this window.</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # keep codes out of the test log
        pass


@pytest.fixture
def listener() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Listener)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.browser
def test_chromium_signs_in_picks_a_patient_narrows_consent_and_lands_on_the_listener(
        ehr: RunningEHR, listener: ThreadingHTTPServer) -> None:
    from playwright.sync_api import sync_playwright

    caregiver = next(u for u in ehr.plan.users if len(u.patient_ids) > 1)
    patient = caregiver.patient_ids[1]
    redirect_uri = f"http://127.0.0.1:{listener.server_address[1]}/callback"
    params, verifier = launch_params(ehr.url, redirect_uri=redirect_uri)
    url = ehr.endpoints.authorize + "?" + urlencode(params)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url)
            assert page.url == ehr.url + "/auth/login"
            # the stylesheet loads under the page's CSP
            background = page.eval_on_selector("header", "e => getComputedStyle(e).backgroundColor")
            assert background == "rgb(31, 95, 139)"
            page.fill("input[name=username]", caregiver.username)
            page.fill("input[name=password]", "not the password")
            page.click("button[type=submit]")
            assert "wrong password" in page.inner_text("main").lower()
            page.fill("input[name=password]", caregiver.password)
            page.click("button[type=submit]")
            assert page.url == ehr.url + "/auth/patient"
            page.check(f"input[name=patient][value='{patient}']")
            page.click("button[type=submit]")
            assert page.url == ehr.url + "/auth/consent"
            boxes = page.locator("input[name=scope]")
            assert boxes.count() == len(params["scope"].split())
            assert all(boxes.nth(i).is_checked() for i in range(boxes.count()))
            page.uncheck("input[name=scope][value='offline_access']")
            with page.expect_navigation(url=f"{redirect_uri}?*"):
                page.click("button[name=approve]")
            landed = page.url
        finally:
            browser.close()

    callbacks = [p for p in listener.received if p.startswith("/callback")]  # type: ignore[attr-defined]
    assert len(callbacks) == 1 and callback_params(callbacks[0]) == callback_params(landed)
    got = callback_params(landed)
    assert got["state"] == params["state"] and got["code"]
    token = exchange(ehr, got["code"], verifier, params)
    assert token.status_code == 200
    body = token.json()
    assert body["patient"] == patient
    assert "offline_access" not in body["scope"].split() and "refresh_token" not in body
    assert "id_token" in body


class AttackerSite(BaseHTTPRequestHandler):
    """Another site (reached as ``localhost``, so cross-site to the EHR at ``127.0.0.1``) serving a page
    that auto-submits a consent form to the EHR."""

    def do_GET(self) -> None:
        body = self.server.page.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.browser
def test_consent_cannot_be_auto_submitted_cross_site(ehr: RunningEHR, listener: ThreadingHTTPServer) -> None:
    """RFC 9700 4.4.1 (CSRF), SMART "Best Practices": while the victim's browser sits on the consent page,
    another site's auto-submitting form, even one carrying the victim's own XSRF value, decides nothing:
    the SameSite=Strict XSRF cookie and the SameSite=Lax request cookie are not sent cross-site. The victim
    can still decide afterwards, and only the victim's decision reaches the app."""
    from playwright.sync_api import sync_playwright

    user = next(u for u in ehr.plan.users if len(u.patient_ids) == 1)
    redirect_uri = f"http://127.0.0.1:{listener.server_address[1]}/callback"
    params, verifier = launch_params(ehr.url, redirect_uri=redirect_uri)
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), AttackerSite)
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context()  # one browser profile: the victim's cookies
                victim = context.new_page()
                victim.goto(ehr.endpoints.authorize + "?" + urlencode(params))
                victim.fill("input[name=username]", user.username)
                victim.fill("input[name=password]", user.password)
                victim.click("button[type=submit]")
                assert victim.url == ehr.url + "/auth/consent"
                xsrf = victim.get_attribute("input[name=_xsrf]", "value")
                assert xsrf
                attacker.page = (  # type: ignore[attr-defined]
                    f'<!doctype html><form method="post" action="{ehr.url}/auth/consent">'
                    f'<input name="_xsrf" value="{xsrf}"><input name="scope" value="patient/*.rs">'
                    '<input name="approve" value="approve"></form>'
                    "<script>document.forms[0].submit()</script>")
                evil = context.new_page()
                with evil.expect_navigation(url=f"{ehr.url}/auth/consent"):
                    evil.goto(f"http://localhost:{attacker.server_address[1]}/evil")
                assert evil.url == ehr.url + "/auth/consent"  # stopped at the EHR, not sent to the app
                assert "XSRF" in evil.inner_text("main")
                assert not [q for q in listener.received if q.startswith("/callback")]  # type: ignore[attr-defined]
                # the victim's own decision still works, and is the only one the app receives
                with victim.expect_navigation(url=f"{redirect_uri}?*"):
                    victim.click("button[name=approve]")
                landed = victim.url
            finally:
                browser.close()
    finally:
        attacker.shutdown()
        attacker.server_close()
    callbacks = [q for q in listener.received if q.startswith("/callback")]  # type: ignore[attr-defined]
    assert len(callbacks) == 1
    got = callback_params(landed)
    assert got["state"] == params["state"] and got["iss"] == ehr.fhir_base
    assert exchange(ehr, got["code"], verifier, params).status_code == 200
