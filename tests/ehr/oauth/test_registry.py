"""Client registration and redirect URI matching (RFC 6749 3.1.2, RFC 8252 7.3 and 8.3, RFC 9700 4.1.3),
and password hashing."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from servers.ehr.command import demo_clients
from servers.ehr.oauth.clients import (
    BROKER_CLIENT_ID,
    INTROSPECTION_CLIENT_ID,
    KIT_CLIENT_ID,
    KIT_REDIRECT_URIS,
    KIT_SCOPE,
    Client,
    ClientRegistry,
    demo_client,
    demo_clients_path,
    load_clients,
    redirect_uri_matches,
)
from servers.ehr.oauth.users import hash_password, verify_password
from tests.ehr.conftest import RunningEHR

from .browserless import launch_params
from .helpers import authorize_raw


@pytest.mark.parametrize(("registered", "requested", "ok"), [
    ("http://127.0.0.1/callback", "http://127.0.0.1/callback", True),
    ("http://127.0.0.1/callback", "http://127.0.0.1:1/callback", True),
    ("http://127.0.0.1/callback", "http://127.0.0.1:65535/callback", True),
    ("http://127.0.0.1:8000/callback", "http://127.0.0.1:9000/callback", True),
    ("http://localhost/callback", "http://localhost:8080/callback", True),
    ("http://127.0.0.1/callback", "http://localhost:8080/callback", False),
    ("http://127.0.0.1/callback", "http://127.0.0.1:0/callback", False),
    ("http://127.0.0.1/callback", "http://127.0.0.1:65536/callback", False),
    ("http://127.0.0.1/callback", "http://127.0.0.1:8080/callback/", False),
    ("http://127.0.0.1/callback", "http://127.0.0.1:8080/Callback", False),
    ("http://127.0.0.1/callback", "http://127.0.0.1:8080/callback?x=1", False),
    ("http://127.0.0.1/callback", "http://127.0.0.1:8080/callback#x", False),
    ("http://127.0.0.1/callback", "http://user@127.0.0.1:8080/callback", False),
    ("http://127.0.0.1/callback", "http://127.0.0.1:8080@evil.example/callback", False),
    ("http://127.0.0.1/callback", "http://127.0.0.1 .evil.example/callback", False),
    ("http://127.0.0.1/callback", "HTTP://127.0.0.1:8080/callback", False),
    ("https://app.example.org/cb", "https://app.example.org/cb", True),
    ("https://app.example.org/cb", "https://app.example.org:444/cb", False),
    ("https://app.example.org/cb", "https://app.example.org/cb?x", False),
])
def test_redirect_uri_matching(registered: str, requested: str, ok: bool) -> None:
    assert redirect_uri_matches(registered, requested) is ok


@pytest.mark.parametrize("registration", [
    {"client_id": "", "redirect_uris": []},
    {"redirect_uris": []},
    {"client_id": "a", "redirect_uris": ["http://app.example.org/cb"]},  # plain http off loopback
    {"client_id": "a", "redirect_uris": ["https://app.example.org/cb#frag"]},
    {"client_id": "a", "redirect_uris": ["custom:cb"]},
    {"client_id": "a", "scope": "patient/*.bogus"},
])
def test_bad_registrations_are_configuration_errors(registration: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Client.from_json(registration)


def test_clients_file_round_trip_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    clients = [Client.from_json({"client_id": "a", "redirect_uris": ["https://a.example/cb"],
                                 "scope": "patient/*.rs"}),
               Client.from_json({"client_id": "b", "client_secret": "s", "scope": "system/*.rs",
                                 "grant_types": ["client_credentials"]})]
    path.write_text(json.dumps({"clients": [c.to_json() for c in clients]}))
    loaded = load_clients(path)
    assert [(c.client_id, c.is_confidential, c.redirect_uris) for c in loaded] == [
        ("a", False, ("https://a.example/cb",)), ("b", True, ())]
    assert loaded[1].check_client_secret("s") and not loaded[1].check_client_secret("t")
    assert not loaded[0].check_client_secret("")
    assert not loaded[0].check_grant_type("client_credentials")
    with pytest.raises(ValueError):
        ClientRegistry([*loaded, loaded[0]])


def test_demo_clients_file_is_created_once_with_random_secrets(tmp_path: Path) -> None:
    first = demo_client(tmp_path, INTROSPECTION_CLIENT_ID)
    assert first.is_confidential and len(first.client_secret or "") >= 32
    assert demo_client(tmp_path, INTROSPECTION_CLIENT_ID).client_secret == first.client_secret
    assert demo_clients_path(tmp_path).stat().st_mode & 0o077 == 0
    kit = demo_client(tmp_path, KIT_CLIENT_ID)
    assert not kit.is_confidential and "http://127.0.0.1/s4s/oauth/callback" in kit.redirect_uris
    assert demo_client(tmp_path / "other", INTROSPECTION_CLIENT_ID).client_secret != first.client_secret


#: the demo clients file as the first version of the EHR wrote it, plus a user's own additions
OLD_KIT = {"client_id": KIT_CLIENT_ID, "client_name": "s4s-jupyter research kit",
           "redirect_uris": ["http://127.0.0.1/callback", "http://localhost/callback",
                             "http://127.0.0.1/s4s/oauth/callback", "http://127.0.0.1/my-own/callback"],
           "grant_types": ["authorization_code", "refresh_token"],
           "scope": "launch/patient openid fhirUser profile offline_access online_access patient/*.rs"}
OLD_FILE = {"clients": [
    OLD_KIT,
    {"client_id": BROKER_CLIENT_ID, "client_name": "s4s FHIR broker", "client_secret": "old-broker-secret",
     "grant_types": ["client_credentials"], "scope": "system/*.rs"},
    {"client_id": INTROSPECTION_CLIENT_ID, "client_secret": "old-introspection-secret",
     "grant_types": ["client_credentials"], "scope": "system/*.rs"},
    {"client_id": "users-app", "redirect_uris": ["http://127.0.0.1/cb"], "scope": "patient/*.rs"},
]}


def test_old_demo_clients_file_picks_up_the_kits_current_redirect_uris(
        tmp_path: Path, start_ehr: Callable[..., RunningEHR]) -> None:
    path = demo_clients_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(OLD_FILE, indent=2))
    os.chmod(path, 0o600)
    assert "http://localhost/s4s/oauth/callback" in KIT_REDIRECT_URIS
    clients = {c.client_id: c for c in demo_clients(tmp_path)}  # what the EHR loads at start
    kit = clients[KIT_CLIENT_ID]
    assert set(kit.redirect_uris) == {*KIT_REDIRECT_URIS, "http://127.0.0.1/my-own/callback"}
    assert set(kit.scope.split()) == set(KIT_SCOPE.split()) and not kit.is_confidential
    # secrets, confidential registrations and registrations a user added: untouched
    on_disk = json.loads(path.read_text())["clients"]
    assert on_disk[1:] == OLD_FILE["clients"][1:]
    assert clients[BROKER_CLIENT_ID].client_secret == "old-broker-secret"
    assert path.stat().st_mode & 0o077 == 0
    # idempotent: a second start leaves the file as it is
    before = path.read_bytes()
    demo_clients(tmp_path)
    assert path.read_bytes() == before
    # and the EHR started from it sends a launch from JupyterLab at localhost:ANY-PORT to the login
    ehr = start_ehr(clients=tuple(clients.values()))
    for uri in ("http://localhost:8888/s4s/oauth/callback", "http://127.0.0.1:8888/s4s/oauth/callback",
                "http://127.0.0.1:5/my-own/callback"):
        params, _ = launch_params(ehr.url, redirect_uri=uri)
        r = authorize_raw(ehr, params)
        assert r.status_code == 303 and r.headers["location"] == "/auth/login", uri


def test_a_kit_registration_made_confidential_or_broken_is_left_alone(tmp_path: Path) -> None:
    path = demo_clients_path(tmp_path)
    path.parent.mkdir(parents=True)
    confidential = {"clients": [{**OLD_KIT, "client_secret": "mine"}]}
    path.write_text(json.dumps(confidential))
    demo_clients(tmp_path)
    assert json.loads(path.read_text()) == confidential
    path.write_text("{not json")
    with pytest.raises(ValueError):
        demo_clients(tmp_path)
    assert path.read_text() == "{not json"


def test_passwords_are_salted_scrypt_hashes() -> None:
    a, b = hash_password("secret"), hash_password("secret")
    assert a != b and a.startswith("scrypt$") and "secret" not in a
    assert verify_password("secret", a) and not verify_password("Secret", a)
    assert not verify_password("secret", "scrypt$broken") and not verify_password("secret", "md5$x$y$z$a$b")
