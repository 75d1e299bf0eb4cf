"""Bearer tokens on every request, refreshed before they expire and after a 401 (RFC 6750 2.1, 3.1).

One :class:`TokenManager` per session owns the current :class:`TokenSet`; it is thread-safe so parallel
downloads share one refresh. Two adapters put it on the wire: :class:`BearerAuth` for httpx (FHIR
searches, WADO-RS streaming) and :class:`RequestsBearerAuth` for the ``requests`` session that
dicomweb-client uses (QIDO-RS, metadata, rendered images). Both retry a request once after a 401 with
a refreshed token, so a download running for hours survives token expiry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import httpx

from s4s_jupyter.client.tokens import Entries, LoginKeys, TokenSet, TokenStore
from s4s_jupyter.core.errors import OAuthError

if TYPE_CHECKING:
    import requests

#: refresh when the access token expires in less than this many seconds
REFRESH_MARGIN = 60.0


class LoginRequired(OAuthError):
    """No usable token: the session must log in (again)."""

    error = "login_required"
    status = 401


class TokenManager:
    """The current token set, its refresh, and where it is kept (``store`` under ``key``).

    ``refresher(tokens) -> TokenSet`` calls the token endpoint; None means tokens cannot be refreshed.
    ``on_change(tokens)`` is called with every token set this manager takes (set, refreshed or adopted).

    With a shared ``store`` (one file for the Jupyter server extension and every kernel), token sets only
    ever move forward: :meth:`adopt` takes a newer set another process wrote without writing it back, and
    a refresh happens under the store's lock after looking at the store first, so a kernel that finds a
    newer set there (another kernel or the extension refreshed already) uses it instead of spending its
    own, possibly rotated-away, refresh token, and never writes an older set over a newer one.
    """

    def __init__(self, tokens: TokenSet | None, refresher: Callable[[TokenSet], TokenSet] | None,
                 on_change: Callable[[TokenSet | None], None] | None = None,
                 margin: float = REFRESH_MARGIN, *, store: TokenStore | None = None,
                 key: str | LoginKeys | None = None) -> None:
        if store is not None and key is None:
            raise ValueError("a token store needs the key the tokens are kept under")
        self._tokens = tokens
        self._refresher = refresher
        self._on_change = on_change
        self._margin = margin
        self._store = store
        slot: LoginKeys | _FixedKey = key if isinstance(key, LoginKeys) else _FixedKey(key or "")
        self._unbound = slot  # the keys without a token set: bound only to a patient the caller asked for
        self._slot = slot.bound(tokens.patient) if tokens is not None else slot
        self._lock = threading.RLock()
        self.refresh_count = 0
        self.adopt_count = 0

    @property
    def tokens(self) -> TokenSet | None:
        return self._tokens

    @property
    def patient(self) -> str | None:
        """The patient this manager is bound to: the one asked for (``LoginKeys.patient``), else that of
        the token set it holds; None when neither. Without a token set (logged out, signed out elsewhere)
        it is bound only to a patient asked for."""
        return self._slot.patient

    def _take(self, tokens: TokenSet | None) -> None:
        self._tokens = tokens
        if self._on_change:
            self._on_change(tokens)

    def _same_patient(self, tokens: TokenSet) -> bool:
        return self._slot.patient is None or tokens.patient == self._slot.patient

    def set(self, tokens: TokenSet | None) -> None:
        """Take ``tokens`` (a login; None: a logout) and write them to the store (a login: its patient's
        entry and the last login; a logout removes them, :class:`~s4s_jupyter.client.tokens.LoginKeys`).
        A login binds the manager to its patient."""
        with self._lock:
            slot = self._slot.bound(tokens.patient) if tokens is not None else self._slot
            if self._store is not None:
                if tokens is None:
                    self._store.update_entries(slot.entry_keys(), slot.forget)
                else:
                    self._store.update_entries(slot.entry_keys(), lambda entries: slot.login(entries, tokens))
            self._slot = slot if tokens is not None else self._unbound
            self._take(tokens)

    def adopt(self, tokens: TokenSet | None) -> bool:
        """Take over a token set found in the store (written by the server extension or another kernel)
        without writing anything back. A set is taken only if it is newer than the current one
        (:meth:`TokenSet.is_newer_than`), so a stale read can never replace a fresher login or refresh,
        and only if it is for the patient this manager is bound to (never another patient's login);
        None (signed out elsewhere) is taken as it is. Returns whether the session's tokens changed."""
        with self._lock:
            current = self._tokens
            if tokens is None:
                if current is None:
                    return False
            elif not self._same_patient(tokens) or (
                    current is not None and (tokens == current or not tokens.is_newer_than(current))):
                return False
            self.adopt_count += 1
            self._slot = self._slot.bound(tokens.patient) if tokens is not None else self._unbound
            self._take(tokens)
            return True

    def reload(self) -> bool:
        """:meth:`adopt` the store's token set for this login (no store: nothing to do). Returns whether
        the tokens changed."""
        if self._store is None:
            return False
        slot = self._slot
        return self.adopt(slot.pick(self._store.entries(slot.entry_keys())))

    def access_token(self) -> str:
        """A current access token, refreshed first when it is about to expire."""
        with self._lock:
            tokens = self._tokens
            if tokens is None:
                raise LoginRequired("not logged in: call login() first")
            if tokens.expires_within(self._margin):
                if tokens.refresh_token and self._refresher:
                    return self._refresh(tokens, None).access_token
                if tokens.expires_within(0):
                    raise LoginRequired("the access token expired and cannot be refreshed; log in again")
            return tokens.access_token

    def refresh_after_rejection(self, rejected: str) -> str | None:
        """After a 401 for ``rejected``: a new token (refreshing only if no other thread or process did
        already), or None when refreshing is impossible."""
        with self._lock:
            tokens = self._tokens
            if tokens is None:
                return None
            if tokens.access_token != rejected:
                return tokens.access_token
            if not self._refresher or not (tokens.refresh_token or self._store is not None):
                return None
            try:
                return self._refresh(tokens, rejected).access_token
            except OAuthError:
                return None

    def _refresh(self, tokens: TokenSet, rejected: str | None) -> TokenSet:
        """A usable token set: a newer one from the store if another process refreshed already, else a
        refresh (of the newest refresh token known), written to the store in the same locked step."""
        assert self._refresher is not None
        refresher = self._refresher
        refreshed: list[TokenSet] = []

        slot = self._slot.bound(tokens.patient)
        chosen: list[TokenSet] = []

        def decide(stored: TokenSet | None) -> TokenSet:
            base = tokens
            if stored is not None and stored.is_newer_than(tokens):
                if stored.access_token != rejected and not stored.expires_within(self._margin):
                    return stored  # someone else refreshed: use theirs, write nothing
                base = stored  # theirs is newer but spent: refresh it (its refresh token is the live one)
            if not base.refresh_token:
                raise LoginRequired("the access token expired and cannot be refreshed; log in again")
            refreshed.append(refresher(base))
            return refreshed[0]

        def change(entries: Entries) -> dict[str, TokenSet | None]:
            chosen.append(decide(slot.pick(entries)))  # only this patient's sets are candidates
            return slot.refreshed(entries, chosen[0]) if refreshed else {}

        if self._store is None:
            new = decide(None)
        else:
            self._store.update_entries(slot.entry_keys(), change)
            new = chosen[0]
        if refreshed:
            self.refresh_count += 1
        else:
            self.adopt_count += 1
        self._take(new)
        return new


class _FixedKey:
    """One store key for everything (a caller that names its own key): the :class:`LoginKeys` interface
    without patients."""

    patient: str | None = None

    def __init__(self, key: str) -> None:
        self.key = key

    def entry_keys(self) -> list[str]:
        return [self.key]

    def bound(self, patient: str | None) -> _FixedKey:
        return self

    def pick(self, entries: Entries) -> TokenSet | None:
        return entries.get(self.key)

    def login(self, entries: Entries, tokens: TokenSet) -> dict[str, TokenSet | None]:
        return {self.key: tokens}

    def refreshed(self, entries: Entries, tokens: TokenSet) -> dict[str, TokenSet | None]:
        return {self.key: tokens}

    def forget(self, entries: Entries) -> dict[str, TokenSet | None]:
        return {self.key: None}


class BearerAuth(httpx.Auth):
    """httpx authentication: ``Authorization: Bearer``; on a 401, refresh once and resend."""

    requires_response_body = False

    def __init__(self, manager: TokenManager) -> None:
        self.manager = manager

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.manager.access_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            fresh = self.manager.refresh_after_rejection(token)
            if fresh is not None and fresh != token:
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request


def requests_auth(manager: TokenManager) -> requests.auth.AuthBase:
    """The same behaviour as :class:`BearerAuth` for a ``requests`` session (dicomweb-client)."""
    import requests

    class RequestsBearerAuth(requests.auth.AuthBase):
        def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
            token = manager.access_token()
            r.headers["Authorization"] = f"Bearer {token}"
            r.register_hook("response", self._retry_on_401)
            return r

        def _retry_on_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
            if response.status_code != 401 or getattr(response.request, "_s4s_retried", False):
                return response
            sent = str(response.request.headers.get("Authorization", ""))[len("Bearer "):]
            fresh = manager.refresh_after_rejection(sent)
            if fresh is None or fresh == sent:
                return response
            response.content  # noqa: B018 - drain, so the connection can be reused
            response.close()
            retry = response.request.copy()
            retry.headers["Authorization"] = f"Bearer {fresh}"
            retry._s4s_retried = True  # type: ignore[attr-defined]
            assert response.connection is not None
            new = response.connection.send(retry, **kwargs)
            new.history.append(response)
            new.request = retry
            return new

    return RequestsBearerAuth()
