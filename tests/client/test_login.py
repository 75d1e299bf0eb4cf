"""SMART standalone launch against the real EHR: its pages driven as a browser would, the redirect
caught by the loopback listener, tokens stored, refreshed before expiry and after a 401, revoked."""

from __future__ import annotations

import dataclasses
import stat
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import s4s_jupyter as s4s
from s4s_jupyter.client.launch import LoopbackRedirect
from s4s_jupyter.client.tokens import TokenStore, store_key
from s4s_jupyter.core.errors import ClientError, OAuthError


def user(stack: dict[str, Any], username: str) -> dict[str, Any]:
    return next(u for u in stack["users"] if u["username"] == username)


def no_browser(url: str) -> None:
    raise AssertionError("the session should not have needed a login")


def test_login_through_the_real_pages_and_the_loopback_listener(stack: dict[str, Any],
                                                                token_file: Path) -> None:
    care = user(stack, "caregiver")
    seen: list[str] = []

    def browser(url: str) -> None:
        seen.append(url)
        s4s.FormLogin(care["username"], care["password"], patient="pat-002")(url)  # visits the callback

    with s4s.connect(stack["ehr_fhir"], browser=browser, token_store=token_file) as ehr:
        assert ehr.patient == "pat-002"
        assert ehr.imaging_base == stack["broker_fhir"]  # from associated_endpoints
        assert set(ehr.tokens.tokens.scopes) >= {"patient/*.rs", "offline_access"}  # type: ignore[union-attr]
        assert ehr.demographics()["id"].tolist() == ["pat-002"]
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in seen[0] and "code_challenge_method=S256" in seen[0]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    stored = TokenStore(token_file).get(store_key(stack["ehr_fhir"], "s4s-jupyter"))
    assert stored is not None and stored.patient == "pat-002" and stored.refresh_token

    # a new kernel: the stored tokens are used, no login
    with s4s.connect(stack["ehr_fhir"], browser=no_browser, token_store=token_file) as again:
        assert again.patient == "pat-002" and len(again.conditions()) > 0


def test_loopback_listener_answers_only_its_callback() -> None:
    with LoopbackRedirect() as rcv:
        assert rcv.redirect_uri.startswith("http://127.0.0.1:") and rcv.redirect_uri.endswith("/callback")
        assert httpx.get(f"http://127.0.0.1:{rcv.port}/other?code=x").status_code == 404
        assert httpx.get(rcv.redirect_uri).status_code == 404  # no code, no error: not a redirect
        with pytest.raises(TimeoutError):
            rcv.wait(0.1)
        r = httpx.get(rcv.redirect_uri + "?code=c1&state=s1")
        assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
        assert rcv.wait(1).endswith("/callback?code=c1&state=s1")
        assert httpx.get(rcv.redirect_uri + "?code=c2&state=s2").status_code == 404  # one shot


def test_a_tampered_state_is_refused(stack: dict[str, Any]) -> None:
    maya = user(stack, "maya1")

    def forging_browser(url: str) -> str:
        redirect = s4s.FormLogin(maya["username"], maya["password"], follow_callback=False)(url)
        assert redirect is not None and "state=" in redirect
        return redirect.replace("state=", "state=forged")

    with pytest.raises(OAuthError) as info:
        s4s.connect(stack["ehr_fhir"], browser=forging_browser, token_store=False)
    assert info.value.error == "invalid_state"


def test_denied_consent_and_wrong_password_fail_clearly(stack: dict[str, Any]) -> None:
    maya = user(stack, "maya1")
    with pytest.raises(OAuthError) as info:
        s4s.connect(stack["ehr_fhir"], browser=s4s.FormLogin(maya["username"], maya["password"],
                                                              approve=False), token_store=False)
    assert info.value.error == "access_denied"
    with pytest.raises(ClientError, match="401"):
        s4s.connect(stack["ehr_fhir"], browser=s4s.FormLogin(maya["username"], "wrong"), token_store=False)


def test_narrowed_consent_gives_a_narrower_token(stack: dict[str, Any]) -> None:
    maya = user(stack, "maya1")
    login = s4s.FormLogin(maya["username"], maya["password"],
                          scopes={"launch/patient", "patient/*.rs"})
    with s4s.connect(stack["ehr_fhir"], browser=login, token_store=False) as ehr:
        tokens = ehr.tokens.tokens
        assert tokens is not None and set(tokens.scopes) == {"launch/patient", "patient/*.rs"}
        assert tokens.refresh_token is None  # offline_access was not granted
        assert len(ehr.labs()) > 0


def login_maya(stack: dict[str, Any], token_file: Path | bool = False) -> s4s.Session:
    maya = user(stack, "maya1")
    return s4s.connect(stack["ehr_fhir"], browser=s4s.FormLogin(maya["username"], maya["password"]),
                       token_store=token_file)


def test_refresh_before_expiry_updates_the_store(stack: dict[str, Any], token_file: Path) -> None:
    with login_maya(stack, token_file) as ehr:
        old = ehr.tokens.tokens
        assert old is not None
        ehr.tokens.set(dataclasses.replace(old, expires_at=time.time() + 5))  # inside the refresh margin
        assert len(ehr.conditions()) > 0
        new = ehr.tokens.tokens
        assert ehr.tokens.refresh_count == 1 and new is not None
        assert new.access_token != old.access_token and new.patient == old.patient
        stored = TokenStore(token_file).get(store_key(stack["ehr_fhir"], "s4s-jupyter"))
        assert stored == new


def test_refresh_after_401_for_fhir_dicomweb_and_dicomweb_client(stack: dict[str, Any]) -> None:
    with login_maya(stack) as ehr:
        studies = ehr.imaging_studies()
        assert len(studies) > 0

        def spoil() -> None:  # the server forgets the token (e.g. a restart): requests get 401
            t = ehr.tokens.tokens
            assert t is not None
            ehr.tokens.set(dataclasses.replace(t, access_token="not-a-valid-token"))

        spoil()
        assert len(ehr.labs()) > 0  # FHIR (httpx auth)
        assert ehr.tokens.refresh_count == 1
        spoil()
        assert len(ehr.retrieve(studies.iloc[0], progress=False)) > 0  # WADO-RS through the broker (httpx)
        assert ehr.tokens.refresh_count == 2
        spoil()
        assert len(ehr.metadata(studies.iloc[0], first_only=True)) > 0  # dicomweb-client (requests)
        assert ehr.tokens.refresh_count == 3


def test_parallel_requests_share_one_refresh(stack: dict[str, Any]) -> None:
    with login_maya(stack) as ehr:
        t = ehr.tokens.tokens
        assert t is not None
        ehr.tokens.set(dataclasses.replace(t, access_token="not-a-valid-token"))
        errors: list[BaseException] = []

        def call() -> None:
            try:
                ehr.conditions()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == [] and ehr.tokens.refresh_count == 1


def test_logout_revokes_and_forgets(stack: dict[str, Any], token_file: Path) -> None:
    ehr = login_maya(stack, token_file)
    tokens = ehr.tokens.tokens
    assert tokens is not None and tokens.refresh_token
    ehr.logout()
    ehr.close()
    assert TokenStore(token_file).get(store_key(stack["ehr_fhir"], "s4s-jupyter")) is None
    r = httpx.get(f"{stack['ehr_fhir']}/Patient/{tokens.patient}",
                  headers={"Authorization": f"Bearer {tokens.access_token}"})
    assert r.status_code == 401
    config = httpx.get(stack["smart_configuration"]).json()
    r = httpx.post(config["token_endpoint"], data={"grant_type": "refresh_token", "client_id": "s4s-jupyter",
                                                   "refresh_token": tokens.refresh_token})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_expired_token_without_refresh_asks_for_login(stack: dict[str, Any]) -> None:
    from s4s_jupyter.client.auth import LoginRequired

    maya = user(stack, "maya1")
    login = s4s.FormLogin(maya["username"], maya["password"], scopes={"launch/patient", "patient/*.rs"})
    with s4s.connect(stack["ehr_fhir"], browser=login, token_store=False) as ehr:
        t = ehr.tokens.tokens
        assert t is not None
        ehr.tokens.set(dataclasses.replace(t, expires_at=time.time() - 1))
        assert not ehr.logged_in
        with pytest.raises(LoginRequired):
            ehr.labs()


def test_connect_without_arguments_uses_the_extensions_environment(stack: dict[str, Any], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel started by the server extension: S4S_EHR_URL, S4S_TOKEN_STORE, S4S_SCOPES decide."""
    maya = user(stack, "maya1")
    store = tmp_path / "shared" / "tokens.json"
    monkeypatch.setenv("S4S_EHR_URL", stack["ehr_fhir"] + "/")
    monkeypatch.setenv("S4S_TOKEN_STORE", str(store))
    monkeypatch.setenv("S4S_SCOPES", "launch/patient offline_access patient/*.rs")
    monkeypatch.delenv("S4S_CLIENT_ID", raising=False)
    monkeypatch.delenv("S4S_IMAGING_URL", raising=False)
    with s4s.connect(browser=s4s.FormLogin(maya["username"], maya["password"])) as ehr:
        assert ehr.fhir_base == stack["ehr_fhir"] and ehr.client.client_id == "s4s-jupyter"
        assert ehr.token_store is not None and ehr.token_store.path == store
        assert set(ehr.tokens.tokens.scopes) == {"launch/patient", "offline_access",  # type: ignore[union-attr]
                                                 "patient/*.rs"}
        assert len(ehr.labs()) > 0
    stored = TokenStore(store).get(store_key(stack["ehr_fhir"], "s4s-jupyter"))
    assert stored is not None and stored.patient == ehr.patient
    # the next kernel finds them there, without a login
    with s4s.connect(browser=no_browser) as again:
        assert again.patient == stored.patient
    # the client id comes from the environment for that EHR (the extension's registration)...
    monkeypatch.setenv("S4S_CLIENT_ID", "the-extensions-app")
    monkeypatch.setenv("S4S_IMAGING_URL", stack["broker_fhir"])
    with s4s.connect(login=False) as ehr:
        assert ehr.client.client_id == "the-extensions-app" and ehr.imaging_base == stack["broker_fhir"]
    # ...and an explicit argument wins
    with s4s.connect(stack["ehr_fhir"], client_id="s4s-jupyter", scopes="patient/*.rs", login=False) as ehr:
        assert ehr.client.client_id == "s4s-jupyter" and ehr.scopes == "patient/*.rs"


def test_connect_without_an_ehr_says_how_to_name_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("S4S_EHR_URL", raising=False)
    with pytest.raises(ClientError, match="S4S_EHR_URL") as info:
        s4s.connect()
    assert info.value.status == 400
