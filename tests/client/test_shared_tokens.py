"""Two kernels (and the server extension) sharing one token store against the real EHR, whose refresh
tokens rotate and whose reuse of a rotated refresh token revokes the whole family: token sets only move
forward, a kernel adopts what another wrote without writing it back, and nobody spends a stale refresh
token."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import httpx

import s4s_jupyter as s4s
from s4s_jupyter.client.tokens import LoginKeys, TokenSet, TokenStore, store_key


def no_browser(url: str) -> None:
    raise AssertionError("the session should not have needed a login")


def kernels(stack: dict[str, Any], token_file: Path) -> tuple[s4s.Session, s4s.Session]:
    """Kernel A logs in through the EHR's pages; kernel B starts later and finds A's tokens."""
    maya = next(u for u in stack["users"] if u["username"] == "maya1")
    a = s4s.connect(stack["ehr_fhir"], browser=s4s.FormLogin(maya["username"], maya["password"]),
                    token_store=token_file)
    b = s4s.connect(stack["ehr_fhir"], browser=no_browser, token_store=token_file)
    assert a.tokens.tokens == b.tokens.tokens
    return a, b


def works(tokens: TokenSet | None, stack: dict[str, Any]) -> bool:
    assert tokens is not None
    r = httpx.get(f"{stack['ehr_fhir']}/Patient/{tokens.patient}",
                  headers={"Authorization": f"Bearer {tokens.access_token}"})
    return r.status_code == 200


def test_a_kernel_adopts_a_newer_refresh_without_writing_it_back(stack: dict[str, Any],
                                                                 token_file: Path) -> None:
    a, b = kernels(stack, token_file)
    key = store_key(stack["ehr_fhir"], "s4s-jupyter")
    with a, b:
        first = a.tokens.tokens
        assert first is not None and first.issued_at is not None
        a.tokens.set(dataclasses.replace(first, expires_at=time.time() + 5))  # A must refresh now
        assert len(a.conditions()) > 0 and a.tokens.refresh_count == 1
        newer = a.tokens.tokens
        assert newer is not None and newer.is_newer_than(first)
        assert TokenStore(token_file).get(key) == newer

        before = token_file.read_bytes(), token_file.stat().st_mtime_ns
        assert b.tokens.reload() is True and b.tokens.tokens == newer
        assert (token_file.read_bytes(), token_file.stat().st_mtime_ns) == before  # nothing written back
        assert b.tokens.reload() is False  # nothing new

        # an older set (a stale read, the other kernel's old login) is refused, and not written either
        assert b.tokens.adopt(first) is False and b.tokens.tokens == newer
        assert (token_file.read_bytes(), token_file.stat().st_mtime_ns) == before
        assert works(newer, stack)

        # signed out elsewhere (a logout forgets the patient's entry and the last login): adopted as it is
        TokenStore(token_file).forget_login(LoginKeys(stack["ehr_fhir"], "s4s-jupyter", newer.patient))
        assert TokenStore(token_file).keys() == []
        assert b.tokens.reload() is True and b.tokens.tokens is None and not b.logged_in


def test_a_kernel_with_stale_tokens_uses_the_newer_ones_instead_of_refreshing(stack: dict[str, Any],
                                                                             token_file: Path) -> None:
    """B's token is about to expire, but A refreshed meanwhile: B takes A's set from the store instead
    of presenting its rotated-away refresh token (which would make the EHR revoke the whole family)."""
    a, b = kernels(stack, token_file)
    key = store_key(stack["ehr_fhir"], "s4s-jupyter")
    with a, b:
        first = a.tokens.tokens
        assert first is not None
        a.tokens.set(dataclasses.replace(first, expires_at=time.time() + 5))
        a.conditions()
        newer = a.tokens.tokens
        assert a.tokens.refresh_count == 1 and newer is not None
        # B still holds the first set, now inside its refresh margin (its in-memory copy only)
        b.tokens.adopt(None)
        b.tokens.adopt(dataclasses.replace(first, expires_at=time.time() + 5))
        assert len(b.labs()) > 0
        assert b.tokens.refresh_count == 0 and b.tokens.adopt_count == 3 and b.tokens.tokens == newer
        assert TokenStore(token_file).get(key) == newer
        assert works(newer, stack)  # the family was not revoked
        assert len(a.labs()) > 0 and a.tokens.refresh_count == 1


def test_a_newer_but_spent_set_is_refreshed_with_its_own_refresh_token(stack: dict[str, Any],
                                                                       token_file: Path) -> None:
    """A refreshed (rotating the refresh token), then its access token was rejected as well; B, still on
    the first set, gets a 401 and refreshes with the newest refresh token in the store, not its own."""
    a, b = kernels(stack, token_file)
    key = store_key(stack["ehr_fhir"], "s4s-jupyter")
    with a, b:
        first = a.tokens.tokens
        assert first is not None
        a.tokens.set(dataclasses.replace(first, expires_at=time.time() + 5))
        a.conditions()
        second = a.tokens.tokens
        assert second is not None
        spent = dataclasses.replace(second, access_token="revoked-or-expired", expires_at=time.time() + 5)
        for k in (key, store_key(stack["ehr_fhir"], "s4s-jupyter", second.patient)):
            TokenStore(token_file).put(k, spent)  # still newer than B's first set
        b.tokens.adopt(None)
        b.tokens.adopt(dataclasses.replace(first, access_token="rejected"))
        assert len(b.labs()) > 0  # 401, then a refresh of the store's (live) refresh token
        third = b.tokens.tokens
        assert b.tokens.refresh_count == 1 and third is not None and third.is_newer_than(second)
        assert TokenStore(token_file).get(key) == third and works(third, stack)


def test_the_store_never_goes_back_to_an_older_set(tmp_path: Path) -> None:
    """Compare-and-swap without servers: update() decides on the entry as it is under the lock."""
    store = TokenStore(tmp_path / "tokens.json")
    old = TokenSet("AT-old", issued_at=100.0, expires_at=3700.0)
    new = TokenSet("AT-new", issued_at=200.0, expires_at=3800.0)
    store.put("k", new)

    def only_forward(candidate: TokenSet) -> Any:
        return lambda stored: candidate if candidate.is_newer_than(stored) else stored

    assert store.update("k", only_forward(old)) == new and store.get("k") == new
    newest = TokenSet("AT-newest", issued_at=300.0)
    assert store.update("k", only_forward(newest)) == newest
    assert json.loads((tmp_path / "tokens.json").read_text())["k"]["issued_at"] == 300.0
    assert store.update("k", lambda stored: None) is None and store.get("k") is None
    # sets written before issued_at existed are ordered by expiry
    assert TokenSet("x", expires_at=2.0).is_newer_than(TokenSet("y", expires_at=1.0))
    assert not TokenSet("x").is_newer_than(TokenSet("y")) and TokenSet("x").is_newer_than(None)
