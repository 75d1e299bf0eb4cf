"""Client registration and redirect URI matching (RFC 6749 3.1.2, RFC 8252 7.3 and 8.3, RFC 9700 4.1.3),
and password hashing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servers.ehr.oauth.clients import (
    INTROSPECTION_CLIENT_ID,
    KIT_CLIENT_ID,
    Client,
    ClientRegistry,
    demo_client,
    demo_clients_path,
    load_clients,
    redirect_uri_matches,
)
from servers.ehr.oauth.users import hash_password, verify_password


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


def test_passwords_are_salted_scrypt_hashes() -> None:
    a, b = hash_password("secret"), hash_password("secret")
    assert a != b and a.startswith("scrypt$") and "secret" not in a
    assert verify_password("secret", a) and not verify_password("Secret", a)
    assert not verify_password("secret", "scrypt$broken") and not verify_password("secret", "md5$x$y$z$a$b")
