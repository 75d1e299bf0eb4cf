"""Value objects and the token store, without servers: round trips, validation, file safety."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from s4s_jupyter.client.discovery import AssociatedEndpoint, SmartConfiguration
from s4s_jupyter.client.launch import authorization_request, parse_redirect
from s4s_jupyter.client.tokens import TokenSet, TokenStore, store_key
from s4s_jupyter.core.errors import ClientError, OAuthError
from s4s_jupyter.core.pkce import s256_challenge

CONFIG: dict[str, Any] = {
    "issuer": "https://ehr.example/fhir",
    "authorization_endpoint": "https://ehr.example/auth/authorize",
    "token_endpoint": "https://ehr.example/auth/token",
    "revocation_endpoint": "https://ehr.example/auth/revoke",
    "code_challenge_methods_supported": ["S256"],
    "capabilities": ["launch-standalone", "client-public"],
    "associated_endpoints": [{"url": "https://dicom.example/fhir/",
                              "capabilities": ["smart-imaging-access"]}],
    "id_token_signing_alg_values_supported": ["RS256"],
}


def test_smart_configuration_round_trip_and_imaging_endpoint() -> None:
    config = SmartConfiguration.from_json(CONFIG)
    assert SmartConfiguration.from_json(config.to_json()) == config
    assert config.to_json() == {**CONFIG}
    assert config.associated_endpoints == (AssociatedEndpoint("https://dicom.example/fhir/",
                                                              ("smart-imaging-access",)),)
    assert config.imaging_endpoint == "https://dicom.example/fhir"
    assert config.extra == {"id_token_signing_alg_values_supported": ["RS256"]}
    assert SmartConfiguration.from_json({**CONFIG, "associated_endpoints": []}).imaging_endpoint is None


@pytest.mark.parametrize("change", [{"token_endpoint": None}, {"authorization_endpoint": ""},
                                    {"code_challenge_methods_supported": ["plain"]}])
def test_smart_configuration_refuses_what_the_kit_cannot_use(change: dict[str, object]) -> None:
    with pytest.raises(ClientError):
        SmartConfiguration.from_json({**CONFIG, **change})


def test_token_set_round_trip_refresh_merge_and_hidden_secrets() -> None:
    body = {"access_token": "AT-secret", "token_type": "bearer", "expires_in": 300, "scope": "patient/*.rs",
            "refresh_token": "RT-secret", "id_token": "ID-secret", "patient": "pat-001",
            "need_patient_banner": True}
    tokens = TokenSet.from_response(body, now=1000.0)
    assert tokens.expires_at == 1300.0 and tokens.patient == "pat-001"
    assert tokens.context == {"need_patient_banner": True}
    assert TokenSet.from_json(tokens.to_json()) == tokens
    assert "secret" not in repr(tokens)
    assert tokens.expires_within(400, now=1000.0) and not tokens.expires_within(200, now=1000.0)
    # a refresh answer without refresh token or context keeps the previous ones (RFC 6749 6)
    refreshed = TokenSet.from_response({"access_token": "AT2", "token_type": "Bearer", "expires_in": 60},
                                       now=2000.0, previous=tokens)
    assert (refreshed.refresh_token, refreshed.patient, refreshed.scope) == ("RT-secret", "pat-001",
                                                                             "patient/*.rs")
    with pytest.raises(ClientError):
        TokenSet.from_response({"access_token": "x", "token_type": "mac"})
    with pytest.raises(ClientError):
        TokenSet.from_response({"token_type": "Bearer"})


def test_token_store_is_private_atomic_and_keyed_by_ehr_and_client(token_file: Path) -> None:
    store = TokenStore(token_file)
    a = TokenSet("AT-a", expires_at=1.0, refresh_token="RT-a", patient="p1")
    b = TokenSet("AT-b", patient="p2")
    store.put(store_key("http://ehr-1/fhir/", "app"), a)
    store.put(store_key("http://ehr-1/fhir", "other-app"), b)
    store.put(store_key("http://ehr-2/fhir", "app"), b)
    assert store.get(store_key("http://ehr-1/fhir", "app")) == a
    assert store.get(store_key("http://ehr-1/fhir", "other-app")) == b
    assert len(store.keys()) == 3
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert [p.name for p in token_file.parent.iterdir() if p.suffix == ".tmp"] == []
    store.delete(store_key("http://ehr-2/fhir", "app"))
    assert TokenStore(token_file).get(store_key("http://ehr-2/fhir", "app")) is None

    # concurrent writers (two kernels) never lose each other's entries
    def put(n: int) -> None:
        TokenStore(token_file).put(f"k{n}", TokenSet(f"AT{n}"))

    threads = [threading.Thread(target=put, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {f"k{n}" for n in range(8)} <= set(store.keys())

    # a file others can read is tightened before use
    os.chmod(token_file, 0o644)
    assert store.get("k1") == TokenSet("AT1")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_default_token_path_is_under_the_jupyter_data_dir(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jd"))
    monkeypatch.delenv("S4S_TOKEN_STORE", raising=False)
    assert TokenStore().path == tmp_path / "jd" / "s4s_jupyter" / "tokens.json"


def test_authorization_request_has_pkce_s256_state_and_aud() -> None:
    from urllib.parse import parse_qs, urlsplit

    config = SmartConfiguration.from_json(CONFIG)
    req = authorization_request(config, "s4s-jupyter", "http://127.0.0.1:5555/callback",
                                "launch/patient patient/*.rs", "https://ehr.example/fhir/")
    q = {k: v[0] for k, v in parse_qs(urlsplit(req.url).query).items()}
    assert req.url.startswith(CONFIG["authorization_endpoint"] + "?")
    assert q["response_type"] == "code" and q["client_id"] == "s4s-jupyter"
    assert q["code_challenge_method"] == "S256"
    assert q["code_challenge"] == s256_challenge(req.code_verifier)
    assert q["state"] == req.state and len(req.state) >= 32
    assert q["aud"] == "https://ehr.example/fhir"
    assert q["redirect_uri"] == "http://127.0.0.1:5555/callback"
    assert "code_verifier" not in req.url and req.code_verifier not in repr(req)
    other = authorization_request(config, "s4s-jupyter", req.redirect_uri, req.scope, "x")
    assert other.state != req.state and other.code_verifier != req.code_verifier

    assert parse_redirect(req, f"{req.redirect_uri}?code=abc&state={req.state}") == "abc"
    with pytest.raises(OAuthError) as info:
        parse_redirect(req, f"{req.redirect_uri}?code=abc&state={other.state}")
    assert info.value.error == "invalid_state"
    with pytest.raises(OAuthError):
        parse_redirect(req, f"{req.redirect_uri}?code=abc")
    with pytest.raises(OAuthError) as info:
        parse_redirect(req, f"{req.redirect_uri}?error=access_denied&state={req.state}")
    assert info.value.error == "access_denied"


def test_without_a_display_the_authorize_url_is_shown(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import webbrowser

    from s4s_jupyter.client.launch import default_browser

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    opened: list[str] = []

    def fake_open(url: str, new: int = 0) -> bool:  # stands in for the user's browser
        opened.append(url)
        return True

    monkeypatch.setattr(webbrowser, "open", fake_open)
    default_browser("https://ehr.example/auth/authorize?x=1")
    assert opened == []  # no graphical browser to open on a headless machine
    assert "https://ehr.example/auth/authorize?x=1" in capsys.readouterr().out
    monkeypatch.setenv("DISPLAY", ":0")
    default_browser("https://ehr.example/auth/authorize?x=2")
    assert opened == ["https://ehr.example/auth/authorize?x=2"]
    assert "https://ehr.example/auth/authorize?x=2" in capsys.readouterr().out  # shown as well


def test_token_store_path_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server extension exports S4S_TOKEN_STORE; a kernel's TokenStore() uses that file."""
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jd"))
    monkeypatch.setenv("S4S_TOKEN_STORE", str(tmp_path / "shared" / "tokens.json"))
    store = TokenStore()
    assert store.path == tmp_path / "shared" / "tokens.json"
    store.put("k", TokenSet("AT"))
    assert TokenStore(tmp_path / "shared" / "tokens.json").get("k") == TokenSet("AT")
    assert not (tmp_path / "jd").exists()
    monkeypatch.setenv("S4S_TOKEN_STORE", "")  # empty: as if unset
    assert TokenStore().path == tmp_path / "jd" / "s4s_jupyter" / "tokens.json"
