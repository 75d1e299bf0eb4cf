"""The pending-login book without HTTP: single use, expiry, bound, per user."""

from __future__ import annotations

import pytest

from s4s_jupyter.client.discovery import SmartConfiguration
from s4s_jupyter.client.launch import authorization_request
from s4s_jupyter.serverext.logins import ClientRegistration, LoginStateError, PendingLogin, PendingLogins

CONFIG = SmartConfiguration(authorization_endpoint="http://127.0.0.1:1/authorize",
                            token_endpoint="http://127.0.0.1:1/token")
REG = ClientRegistration("http://127.0.0.1:1/fhir", "s4s-jupyter")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pending(book: PendingLogins, user: str = "alice") -> PendingLogin:
    request = authorization_request(CONFIG, REG.client_id, "http://127.0.0.1:8888/s4s/oauth/callback",
                                    "launch/patient", REG.ehr)
    p = PendingLogin(REG, CONFIG, request, user, book.now())
    book.add(p)
    return p


def test_a_state_is_taken_once() -> None:
    book = PendingLogins()
    p = pending(book)
    assert book.take(p.request.state, "alice") is p
    with pytest.raises(LoginStateError, match="already used"):
        book.take(p.request.state, "alice")


def test_states_expire() -> None:
    clock = Clock()
    book = PendingLogins(ttl=60, clock=clock)
    p = pending(book)
    clock.now += 61
    with pytest.raises(LoginStateError):
        book.take(p.request.state, "alice")
    assert len(book) == 0


def test_the_book_is_bounded_and_drops_the_oldest() -> None:
    book = PendingLogins(limit=3)
    first = pending(book)
    rest = [pending(book) for _ in range(3)]
    assert len(book) == 3
    with pytest.raises(LoginStateError):
        book.take(first.request.state, "alice")
    assert book.take(rest[-1].request.state, "alice") is rest[-1]


def test_a_missing_or_foreign_state_is_refused_and_the_real_one_survives() -> None:
    book = PendingLogins()
    p = pending(book)
    for bad in (None, "", p.request.state[:-1], p.request.state + "x"):
        with pytest.raises(LoginStateError):
            book.take(bad, "alice")
    with pytest.raises(LoginStateError, match="another Jupyter user"):
        book.take(p.request.state, "mallory")
    assert len(book) == 0  # taken by the foreign attempt: a state never serves twice


def test_registration_repr_hides_the_secret() -> None:
    assert "s3cret" not in repr(ClientRegistration("http://x/fhir", "c", "s3cret"))


def test_only_configured_ehrs_and_clients() -> None:
    from s4s_jupyter.client.tokens import TokenStore
    from s4s_jupyter.core.errors import OAuthError
    from s4s_jupyter.serverext.logins import SmartLogins

    confidential = ClientRegistration("http://127.0.0.1:1/fhir", "app", "secret")
    other = ClientRegistration("http://127.0.0.1:2/fhir", "s4s-jupyter")
    logins = SmartLogins([confidential, other], TokenStore("/nonexistent/tokens.json"), scopes="openid")
    assert logins.registration() == confidential
    assert logins.registration("http://127.0.0.1:2/fhir/") == other
    assert logins.registration("http://127.0.0.1:2/fhir", "another-public") == ClientRegistration(
        "http://127.0.0.1:2/fhir", "another-public")
    with pytest.raises(OAuthError, match="not configured") as exc:
        logins.registration("http://127.0.0.1:3/fhir")
    assert exc.value.error == "invalid_request"
    with pytest.raises(OAuthError) as exc:  # a confidential client's EHR: no other client ids
        logins.registration("http://127.0.0.1:1/fhir", "intruder")
    assert exc.value.error == "invalid_client"
    with pytest.raises(OAuthError, match="no EHR configured"):
        SmartLogins([], TokenStore("/nonexistent/tokens.json"), scopes="openid").registration()
