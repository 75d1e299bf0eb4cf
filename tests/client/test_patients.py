"""Several patients in one notebook: the token store keeps one login per patient (and the last login),
``connect(patient=X)`` reuses or asks for X, ``connect()`` takes the last login, and a session never takes
another patient's tokens, on login, refresh or reload. Against the real EHR (its demo auto-approve
honours the ``patient`` hint) and the real pages."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import s4s_jupyter as s4s
from s4s_jupyter.client.tokens import LoginKeys, TokenSet, TokenStore, store_key
from s4s_jupyter.core.errors import ClientError

CLIENT = "s4s-jupyter"


class Visits:
    """A browser for the auto-approving EHR that counts the logins it was asked for."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, url: str) -> None:
        self.urls.append(url)
        httpx.get(url, follow_redirects=True, timeout=30).raise_for_status()


def no_browser(url: str) -> None:
    raise AssertionError("the session should not have needed a login")


def expiring(session: s4s.Session) -> None:
    """Make the session's in-memory token set expire within the refresh margin (the store untouched)."""
    tokens = session.tokens.tokens
    assert tokens is not None
    session.tokens.adopt(None)
    session.tokens.adopt(dataclasses.replace(tokens, expires_at=time.time() + 5))


def works(session: s4s.Session) -> bool:
    return session.demographics()["id"].tolist() == [session.patient]


def test_one_login_per_patient_reused_by_patient(auto_stack: dict[str, Any], token_file: Path) -> None:
    ehr = auto_stack["ehr_fhir"]
    browser = Visits()
    for pid in ("pat-001", "pat-002"):
        with s4s.connect(ehr, patient=pid, browser=browser, login_hint="caregiver",
                         token_store=token_file) as s:
            assert s.patient == pid and works(s)
    assert len(browser.urls) == 2 and all("patient=pat-00" in u for u in browser.urls)
    store = TokenStore(token_file)
    assert store.keys() == sorted([store_key(ehr, CLIENT), store_key(ehr, CLIENT, "pat-001"),
                                   store_key(ehr, CLIENT, "pat-002")])
    assert store.get(store_key(ehr, CLIENT)).patient == "pat-002"  # type: ignore[union-attr]

    # the first patient again: its own login, not the last one (pat-002), and no new login
    with s4s.connect(ehr, patient="pat-001", browser=no_browser, token_store=token_file) as first:
        assert first.patient == "pat-001" and works(first)
    # no patient named: the last login
    with s4s.connect(ehr, browser=no_browser, token_store=token_file) as last:
        assert last.patient == "pat-002" and works(last)
    # a third patient: asked for, stored next to the others
    with s4s.connect(ehr, patient="pat-003", browser=browser, token_store=token_file) as third:
        assert third.patient == "pat-003"
    assert len(browser.urls) == 3 and len(TokenStore(token_file).keys()) == 4


def test_sessions_of_two_patients_never_mix_tokens(auto_stack: dict[str, Any], token_file: Path) -> None:
    ehr = auto_stack["ehr_fhir"]
    browser = Visits()
    a = s4s.connect(ehr, patient="pat-001", browser=browser, login_hint="caregiver", token_store=token_file)
    # a kernel without patient=: it takes the last login (pat-001) and is bound to that patient from then on
    unbound = s4s.connect(ehr, browser=no_browser, token_store=token_file)
    b = s4s.connect(ehr, patient="pat-002", browser=browser, login_hint="caregiver", token_store=token_file)
    with a, unbound, b:
        assert (a.patient, unbound.patient, b.patient) == ("pat-001", "pat-001", "pat-002")
        store = TokenStore(token_file)
        last = store_key(ehr, CLIENT)
        assert store.get(last).patient == "pat-002"  # type: ignore[union-attr]
        # the last login is now another patient's: the bound kernel neither reloads nor refreshes into it
        assert unbound.tokens.reload() is False and unbound.patient == "pat-001"
        expiring(unbound)
        assert works(unbound) and unbound.tokens.refresh_count == 1 and unbound.patient == "pat-001"
        assert store.get(last).patient == "pat-002"  # type: ignore[union-attr]  # a refresh of pat-001 left pat-002's last login alone
        own = store.get(store_key(ehr, CLIENT, "pat-001"))
        assert own is not None and own == unbound.tokens.tokens  # it went to pat-001's own entry
        # a, on the same login, finds the refreshed set there instead of refreshing again
        expiring(a)
        assert works(a) and a.tokens.refresh_count == 0 and a.tokens.tokens == own
        assert works(b) and b.patient == "pat-002" and b.tokens.refresh_count == 0
        # another patient's token set offered directly is refused
        other = b.tokens.tokens
        assert other is not None
        assert a.tokens.adopt(dataclasses.replace(other, issued_at=time.time() + 60)) is False
        # logging out pat-002 forgets its entry and the last login (its), not pat-001's
        b.logout()
        assert TokenStore(token_file).keys() == [store_key(ehr, CLIENT, "pat-001")]
        assert works(a)


def test_stores_of_earlier_versions_stay_readable(auto_stack: dict[str, Any], token_file: Path) -> None:
    """A file with only the EHR+client entry (what earlier versions and the server extension wrote)."""
    ehr = auto_stack["ehr_fhir"]
    with s4s.connect(ehr, patient="pat-002", browser=Visits(), token_store=False) as s:
        tokens = s.tokens.tokens
    assert tokens is not None
    token_file.parent.mkdir(parents=True)
    token_file.write_text(json.dumps({store_key(ehr, CLIENT): tokens.to_json()}))
    token_file.chmod(0o600)
    with s4s.connect(ehr, browser=no_browser, token_store=token_file) as last:
        assert last.patient == "pat-002" and works(last)
    with s4s.connect(ehr, patient="pat-002", browser=no_browser, token_store=token_file) as same:
        assert same.patient == "pat-002" and works(same)
    browser = Visits()
    with s4s.connect(ehr, patient="pat-001", browser=browser, login_hint="caregiver",
                     token_store=token_file) as other:
        assert other.patient == "pat-001" and len(browser.urls) == 1  # not pat-002's tokens


def test_a_login_for_another_patient_is_refused_and_not_kept(stack: dict[str, Any], token_file: Path) -> None:
    """The user picks another patient at the EHR's picker than the session asked for."""
    care = next(u for u in stack["users"] if u["username"] == "caregiver")
    seen: list[str] = []

    def browser(url: str) -> None:
        seen.append(url)
        s4s.FormLogin(care["username"], care["password"], patient="pat-002")(url)

    with pytest.raises(ClientError, match="for patient pat-002, but this session is for patient pat-001") \
            as e:
        s4s.connect(stack["ehr_fhir"], patient="pat-001", browser=browser, token_store=token_file)
    assert e.value.status == 409 and "patient=pat-001" in seen[0]
    assert TokenStore(token_file).keys() == [] or not token_file.exists()


def test_login_keys_pick_only_the_bound_patient() -> None:
    keys = LoginKeys("http://ehr/fhir", CLIENT)
    assert keys.entry_keys() == ["s4s-jupyter http://ehr/fhir"]
    bound = keys.bound("p1")
    assert bound.entry_keys() == ["s4s-jupyter http://ehr/fhir", "s4s-jupyter http://ehr/fhir Patient/p1"]
    p1, p1_newer = TokenSet("a1", patient="p1", issued_at=1.0), TokenSet("a2", patient="p1", issued_at=2.0)
    p2 = TokenSet("b", patient="p2", issued_at=3.0)
    assert bound.pick({bound.last: p2, bound.own or "": p1}) == p1
    assert bound.pick({bound.last: p1_newer, bound.own or "": p1}) == p1_newer
    assert bound.pick({bound.last: p2}) is None
    assert keys.pick({keys.last: p2}) == p2
    assert bound.refreshed({bound.last: p2}, p1_newer) == {bound.own: p1_newer}
    assert bound.forget({bound.last: p2, bound.own or "": p1}) == {bound.own: None}


def test_a_session_is_bound_while_it_holds_tokens_or_to_the_patient_asked_for(tmp_path: Path) -> None:
    """Without tokens (after a logout) a session that named no patient takes whichever login comes next;
    one that asked for a patient stays that patient's."""
    from s4s_jupyter.client.auth import TokenManager

    store = TokenStore(tmp_path / "tokens.json")
    p1 = TokenSet("a1", patient="p1", issued_at=1.0)
    p2 = TokenSet("b", patient="p2", issued_at=2.0)
    free = TokenManager(None, None, store=store, key=LoginKeys("http://ehr/fhir", CLIENT))
    free.set(p1)
    assert free.patient == "p1" and free.adopt(p2) is False  # holding p1's tokens: never p2's
    free.set(None)
    assert free.patient is None and store.keys() == []
    assert free.adopt(p2) is True and free.patient == "p2"
    asked = TokenManager(None, None, store=store, key=LoginKeys("http://ehr/fhir", CLIENT, "p1"))
    assert asked.patient == "p1" and asked.adopt(p2) is False
    asked.set(p1)
    asked.set(None)
    assert asked.patient == "p1" and asked.adopt(p2) is False and asked.adopt(p1) is True
