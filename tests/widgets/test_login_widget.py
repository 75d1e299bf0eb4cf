"""The login widget without a browser: set values, click buttons, against the real stack."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

import s4s_jupyter as s4s
from s4s_jupyter.client.automation import FormLogin
from s4s_jupyter.client.tokens import LoginKeys, TokenStore, store_key
from s4s_jupyter.widgets import LoginWidget, extension_base_url

pytestmark = pytest.mark.timeout(60)


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_loopback_sign_in_shows_the_patient_and_sign_out_revokes(
        session: Any, user: dict[str, Any], widget_stack: dict[str, Any], token_path: Path) -> None:
    widget = LoginWidget(session, server_base_url=False, poll_interval=0,
                         browser=FormLogin(user["username"], user["password"]))
    try:
        assert "data-logged-in='false'" in widget.status.value and widget.logout_button.disabled
        assert widget.login_button.layout.display != "none"
        widget.login_button.click()
        assert widget.pending is not None
        tokens = widget.pending.result(timeout=30)
        patient = user["patient_ids"][0]
        assert tokens.patient == patient
        assert f"data-patient='{patient}'" in widget.status.value
        assert "patient/*.rs" in widget.status.value and not widget.logout_button.disabled
        assert tokens.access_token not in widget.status.value
        assert TokenStore(token_path).get(store_key(widget_stack["ehr_fhir"], "s4s-jupyter")) == tokens

        widget.logout_button.click()
        assert "data-logged-in='false'" in widget.status.value
        assert TokenStore(token_path).get(store_key(widget_stack["ehr_fhir"], "s4s-jupyter")) is None
        r = httpx.get(f"{widget_stack['ehr_fhir']}/Patient/{patient}",
                      headers={"Authorization": f"Bearer {tokens.access_token}"})
        assert r.status_code == 401
    finally:
        widget.close()


def test_a_failed_sign_in_is_shown_in_the_widget(session: Any, user: dict[str, Any]) -> None:
    widget = LoginWidget(session, server_base_url=False, poll_interval=0,
                         browser=FormLogin(user["username"], "wrong password"))
    try:
        widget.login_button.click()
        assert widget.pending is not None
        with pytest.raises(Exception):  # noqa: B017 - whichever the kit raises, it must reach the widget
            widget.pending.result(timeout=30)
        assert "s4s-error" in widget.message.value and "sign-in failed" in widget.message.value
        assert not widget.login_button.disabled
    finally:
        widget.close()


def test_with_the_extension_the_button_is_a_link_and_the_store_brings_the_login(
        session: Any, user: dict[str, Any], widget_stack: dict[str, Any], token_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S4S_JUPYTER_BASE_URL", "/user/ada/")
    monkeypatch.setenv("S4S_TOKEN_STORE", str(token_path))
    monkeypatch.setenv("S4S_EHR_URL", widget_stack["ehr_fhir"])
    assert extension_base_url(session) == "/user/ada/"
    widget = LoginWidget(session, poll_interval=0.1)
    try:
        assert widget.server_base_url == "/user/ada/"
        assert widget.login_button.layout.display == "none"
        href = widget.link.value.split('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        parts = urlsplit(href)
        assert parts.path == "/user/ada/s4s/login" and not parts.netloc  # relative to the page's origin
        assert parse_qs(parts.query)["ehr"] == [widget_stack["ehr_fhir"]]
        # the extension (here: another process's session on the same store) completes a login ...
        with s4s.connect(widget_stack["ehr_fhir"], token_store=token_path,
                         browser=FormLogin(user["username"], user["password"])) as other:
            assert other.logged_in
        # ... and the widget's poller takes it over: the notebook's session now works
        wait_for(lambda: "data-logged-in='true'" in widget.status.value)
        assert session.logged_in and session.patient == user["patient_ids"][0]
        assert session.read("Patient", session.patient)["id"] == session.patient
        # a kernel restart: a new session on the same store is signed in at once
        with s4s.connect(widget_stack["ehr_fhir"], login=False, token_store=token_path) as restarted:
            assert restarted.logged_in and restarted.patient == session.patient
        # a logout elsewhere (the extension forgets the login's entries) reaches the widget too
        TokenStore(token_path).forget_login(LoginKeys(widget_stack["ehr_fhir"], "s4s-jupyter",
                                                      session.patient))
        wait_for(lambda: "data-logged-in='false'" in widget.status.value)
        assert not session.logged_in
    finally:
        widget.close()


def test_the_extension_is_not_used_for_another_store_or_ehr(session: Any, tmp_path: Path,
                                                            widget_stack: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S4S_JUPYTER_BASE_URL", "/")
    monkeypatch.setenv("S4S_TOKEN_STORE", str(tmp_path / "elsewhere.json"))
    assert extension_base_url(session) is None
    monkeypatch.delenv("S4S_TOKEN_STORE")
    monkeypatch.setenv("S4S_EHR_URL", "http://127.0.0.1:9/fhir")
    assert extension_base_url(session) is None
    monkeypatch.setenv("S4S_EHR_URL", widget_stack["ehr_fhir"])
    assert extension_base_url(session) == "/"
