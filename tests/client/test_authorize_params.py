"""Extra authorize parameters (OpenID Connect ``login_hint``, any other a standard defines): added to the
authorize URL, honoured by the real EHR (its demo auto-approve reads the hints), and the kit's own
parameters refused before anything is sent."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

import s4s_jupyter as s4s
from s4s_jupyter.client.launch import KIT_AUTHORIZE_PARAMS


def visit(seen: list[str]) -> Any:
    """A browser for an auto-approving EHR: GET the authorize URL and follow it to the loopback callback."""
    def browser(url: str) -> None:
        seen.append(url)
        httpx.get(url, follow_redirects=True, timeout=30).raise_for_status()
    return browser


def test_login_hint_and_authorize_params_reach_the_ehr(auto_stack: dict[str, Any]) -> None:
    seen: list[str] = []
    with s4s.connect(auto_stack["ehr_fhir"], browser=visit(seen), token_store=False, login_hint="caregiver",
                     authorize_params={"patient": "pat-002", "ui_locales": "en"}) as ehr:
        assert ehr.patient == "pat-002"  # the EHR chose the user and patient from the hints
    query = parse_qs(urlsplit(seen[0]).query)
    assert query["login_hint"] == ["caregiver"] and query["patient"] == ["pat-002"]
    assert query["ui_locales"] == ["en"] and query["code_challenge_method"] == ["S256"]
    assert all(len(v) == 1 for v in query.values())  # nothing doubled


def test_login_hint_alone_picks_that_users_patient(auto_stack: dict[str, Any]) -> None:
    seen: list[str] = []
    care = next(u for u in auto_stack["users"] if u["username"] == "caregiver")
    with s4s.connect(auto_stack["ehr_fhir"], browser=visit(seen), token_store=False, login=False) as ehr:
        tokens = ehr.login(browser=visit(seen), login_hint="caregiver")
        assert tokens.patient == care["patient_ids"][0]


@pytest.mark.parametrize("name", sorted(KIT_AUTHORIZE_PARAMS))
def test_the_kits_own_parameters_are_refused_before_any_request(name: str) -> None:
    def browser(url: str) -> None:
        raise AssertionError("nothing may be sent")

    # a closed port: connect() would fail with a connection error if it got as far as discovery
    with pytest.raises(ValueError, match=f"{name!r} is set by the kit"):
        s4s.connect("http://127.0.0.1:9/fhir", browser=browser, token_store=False,
                    authorize_params={name: "x"})


def test_session_login_refuses_them_too(stack: dict[str, Any]) -> None:
    with s4s.connect(stack["ehr_fhir"], login=False, token_store=False) as ehr:
        with pytest.raises(ValueError, match="'state' is set by the kit"):
            ehr.login(browser=lambda url: None, authorize_params={"state": "mine"})
        with pytest.raises(ValueError, match="string values"):
            ehr.login(browser=lambda url: None, authorize_params={"prompt": 1})  # type: ignore[dict-item]
        assert not ehr.logged_in
