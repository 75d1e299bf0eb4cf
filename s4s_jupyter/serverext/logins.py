"""The server extension's domain: pending SMART logins, the code exchange, status and logout.

No web framework here (the handlers in :mod:`s4s_jupyter.serverext.handlers` parse requests and call
this). The protocol pieces are the kit's own (:mod:`s4s_jupyter.client.launch`): the authorization
request with a fresh ``state`` and PKCE S256 pair (SMART App Launch 2.x; RFC 7636), the code exchange
(RFC 6749 4.1.3) and revocation (RFC 7009); tokens go to the kit's :class:`TokenStore`, the file the
kernels read, so a kernel restart keeps the login and a kernel's refresh is seen here.

Security decisions (``docs/jupyter.md``):

- ``state`` and ``code_verifier`` never leave the server process except in the authorize URL's
  ``state``; a pending login is kept under the SHA-256 of its state, is bound to the Jupyter user who
  started it, expires after ``ttl`` seconds and is taken (removed) by the first callback that names it,
  whatever happens next: a replayed callback finds nothing (RFC 6749 10.12, RFC 9700 4.7).
- Only configured EHRs: a login URL naming another EHR is refused (a GET can be forged cross-site; an
  open EHR parameter would let any page make the server fetch arbitrary URLs and log the user into an
  attacker's server).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from s4s_jupyter.client import discovery, launch
from s4s_jupyter.client.tokens import LoginKeys, TokenSet, TokenStore, store_key
from s4s_jupyter.core.errors import ClientError, OAuthError


class LoginStateError(OAuthError):
    """A callback whose ``state`` is missing, unknown, expired, already used or another user's."""

    error = "invalid_state"
    status = 400


@dataclass(frozen=True)
class ClientRegistration:
    """The app's registration at one EHR (a public client has no secret and relies on PKCE)."""

    ehr: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """The token store key of the last login (the one a kernel's ``connect()`` without ``patient=``
        takes)."""
        return store_key(self.ehr, self.client_id)

    def login_keys(self, patient: str | None = None) -> LoginKeys:
        """Where a login is kept: the last login, and its patient's entry (the kernel's ``connect(...,
        patient=)`` reads that one), :class:`~s4s_jupyter.client.tokens.LoginKeys`."""
        return LoginKeys(self.ehr, self.client_id, patient)

    @property
    def credentials(self) -> launch.ClientCredentials:
        return launch.ClientCredentials(self.client_id, self.client_secret)


@dataclass(frozen=True)
class PendingLogin:
    """One started login: what the callback needs to finish it (secrets hidden from ``repr``)."""

    registration: ClientRegistration
    config: discovery.SmartConfiguration
    request: launch.AuthorizationRequest
    user: str
    created: float


def _state_key(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8", "surrogatepass")).hexdigest()


class PendingLogins:
    """Pending logins by (the hash of) their ``state``: bounded, expiring, single use, thread-safe."""

    def __init__(self, ttl: float = 600.0, limit: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.limit = limit
        self._clock = clock
        self._pending: dict[str, PendingLogin] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pending)

    def now(self) -> float:
        return self._clock()

    def add(self, pending: PendingLogin) -> None:
        with self._lock:
            self._expire()
            while len(self._pending) >= self.limit:  # drop the oldest: a flood cannot grow memory
                self._pending.pop(next(iter(self._pending)))
            self._pending[_state_key(pending.request.state)] = pending

    def take(self, state: str | None, user: str) -> PendingLogin:
        """The pending login ``state`` names, removed; :class:`LoginStateError` when there is none."""
        if not state:
            raise LoginStateError("the callback carries no state; start the login again")
        with self._lock:
            self._expire()
            pending = self._pending.pop(_state_key(state), None)
        if pending is None:
            raise LoginStateError("unknown, expired or already used state; start the login again")
        if pending.user != user:
            raise LoginStateError("this login was started by another Jupyter user")
        return pending

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, p in self._pending.items() if now - p.created > self.ttl]:
            del self._pending[key]


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def token_status(registration: ClientRegistration, tokens: TokenSet | None,
                 now: float | None = None) -> dict[str, Any]:
    """What ``/s4s/api/status`` answers: never a token, only what they say."""
    now = time.time() if now is None else now
    out: dict[str, Any] = {"ehr": registration.ehr, "client_id": registration.client_id,
                           "logged_in": False, "patient": None, "scopes": [], "expires_at": None,
                           "expired": None, "refreshable": False}
    if tokens is None:
        return out
    expired = tokens.expires_within(0, now=now)
    out.update(logged_in=not expired or bool(tokens.refresh_token), patient=tokens.patient,
               scopes=list(tokens.scopes), expires_at=_iso(tokens.expires_at), expired=expired,
               refreshable=bool(tokens.refresh_token))
    return out


class SmartLogins:
    """Start and finish logins, report status, log out: for the EHRs this server is configured with.

    ``registrations``: the allowed EHR/client pairs, the first being the default. The HTTP calls are
    blocking (httpx, as the kit's); the handlers run them in a thread.
    """

    def __init__(self, registrations: Sequence[ClientRegistration], store: TokenStore, *,
                 scopes: str, pending: PendingLogins | None = None, timeout: float = 30.0) -> None:
        self.registrations = tuple(registrations)
        self.store = store
        self.scopes = scopes
        self.pending = pending or PendingLogins()
        self.timeout = timeout

    def registration(self, ehr: str | None = None, client_id: str | None = None) -> ClientRegistration:
        """The registration for ``ehr`` (default: the configured one) and ``client_id``.

        Raises :class:`OAuthError` (400) for an EHR or client this server is not configured for.
        """
        if not self.registrations:
            raise OAuthError("no EHR configured: set S4SExtension.ehr_url (or S4S_EHR_URL)",
                             error="invalid_request")
        wanted = (ehr or self.registrations[0].ehr).rstrip("/")
        candidates = [r for r in self.registrations if r.ehr == wanted]
        if not candidates:
            raise OAuthError(f"EHR {wanted!r} is not configured for this Jupyter server "
                             "(S4SExtension.ehr_url / allowed_ehr_urls)", error="invalid_request")
        if client_id is None:
            return candidates[0]
        for r in candidates:
            if r.client_id == client_id:
                return r
        if any(r.client_secret for r in candidates):
            raise OAuthError(f"client {client_id!r} is not configured for {wanted}", error="invalid_client")
        return ClientRegistration(wanted, client_id)  # another public client at an allowed EHR

    def start(self, registration: ClientRegistration, redirect_uri: str, user: str,
              scope: str | None = None) -> str:
        """A new pending login; returns the EHR's authorize URL to send the browser to."""
        import httpx

        with httpx.Client(timeout=self.timeout) as http:
            config = discovery.discover(http, registration.ehr)
        request = launch.authorization_request(config, registration.client_id, redirect_uri,
                                               scope or self.scopes, registration.ehr)
        self.pending.add(PendingLogin(registration, config, request, user, self.pending.now()))
        return request.url

    def finish(self, pending: PendingLogin, query: Mapping[str, str]) -> TokenSet:
        """Finish a login whose state was already taken: an ``error`` redirect raises
        :class:`OAuthError`; else the code is exchanged with the verifier and the tokens stored."""
        import httpx

        redirect = "?" + urlencode(dict(query))
        code = launch.parse_redirect(pending.request, redirect)
        with httpx.Client(timeout=self.timeout) as http:
            tokens = launch.exchange_code(http, pending.config, pending.registration.credentials,
                                          pending.request, code)
        self.store.save_login(pending.registration.login_keys(), tokens)  # last login + its patient's
        return tokens

    def status(self, registration: ClientRegistration) -> dict[str, Any]:
        return token_status(registration, self.store.get(registration.key))

    def logout(self, registration: ClientRegistration) -> dict[str, Any]:
        """Remove the tokens from the store, then revoke them at the EHR (RFC 7009).

        The local copy goes first, whatever the EHR answers: after a logout no kernel can use them. A
        failed revocation raises :class:`ClientError` (the caller reports it; the login is gone here).
        """
        import httpx

        tokens = self.store.get(registration.key)
        if tokens is not None:  # the last login, and the same patient's own entry
            self.store.forget_login(registration.login_keys(tokens.patient))
        if tokens is None:
            return {"logged_out": False, "revoked": False}
        with httpx.Client(timeout=self.timeout) as http:
            try:
                config = discovery.discover(http, registration.ehr)
                if tokens.refresh_token:
                    launch.revoke_token(http, config, registration.credentials, tokens.refresh_token,
                                        "refresh_token")
                launch.revoke_token(http, config, registration.credentials, tokens.access_token,
                                    "access_token")
            except httpx.HTTPError as exc:
                raise ClientError(f"the EHR could not be reached to revoke the tokens ({type(exc).__name__})",
                                  status=502) from exc
        return {"logged_out": True, "revoked": True}
