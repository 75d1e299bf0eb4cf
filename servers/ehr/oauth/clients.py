"""Registered OAuth clients, loaded from a JSON configuration file (RFC 6749 2, RFC 7591 metadata names).

The file holds ``{"clients": [{...}, ...]}``; each client has ``client_id``, ``redirect_uris``,
``grant_types``, ``scope`` (the most it may ask for, SMART scope syntax) and, for a confidential client,
``client_secret`` (it then authenticates with ``client_secret_basic``; a client without a secret is public
and authenticates with ``none``).

Written by hand because Authlib leaves it to the application: redirect URI matching. It is exact string
comparison, except that a registered loopback URI (``http://127.0.0.1/...``, ``http://[::1]/...``,
``http://localhost/...``) accepts any port, as RFC 8252 7.3 requires for native apps; host, path and query
must still be identical (RFC 9700 4.1.3).
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin

from s4s_jupyter.core.scopes import ScopeContext, ScopeSet, ScopeSyntaxError

#: The kit's public client and its redirect URIs (loopback: any port, RFC 8252 7.3): the kit's own
#: loopback listener, and the Jupyter extension's callback for JupyterLab opened at 127.0.0.1 or localhost.
KIT_CLIENT_ID = "s4s-jupyter"
KIT_REDIRECT_URIS = (
    "http://127.0.0.1/callback",
    "http://localhost/callback",
    "http://127.0.0.1/s4s/oauth/callback",
    "http://localhost/s4s/oauth/callback",
)
KIT_SCOPE = ("launch/patient openid fhirUser profile offline_access online_access "
             "patient/*.rs user/*.rs")
#: Confidential demo clients: the FHIR broker and the token introspection service.
BROKER_CLIENT_ID = "s4s-broker"
INTROSPECTION_CLIENT_ID = "s4s-introspection"
SYSTEM_SCOPE = "system/*.rs"

_LOOPBACK = re.compile(
    r"^http://(?P<host>127\.0\.0\.1|localhost|\[::1\])(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[^?#\s]*)?(?P<query>\?[^#\s]*)?$")


def is_loopback_uri(uri: str) -> bool:
    """Whether ``uri`` is an ``http`` loopback redirect URI (RFC 8252 7.3, 8.3)."""
    m = _LOOPBACK.match(uri)
    return m is not None and (m["port"] is None or 0 < int(m["port"]) < 65536)


def redirect_uri_matches(registered: str, requested: str) -> bool:
    """Exact match, or for a loopback ``registered`` URI, a match of everything but the port."""
    if hmac.compare_digest(registered.encode(), requested.encode()):
        return True
    reg, req = _LOOPBACK.match(registered), _LOOPBACK.match(requested)
    if not reg or not req or not is_loopback_uri(requested):
        return False
    return (reg["host"], reg["path"] or "/", reg["query"] or "") == (
        req["host"], req["path"] or "/", req["query"] or "")


@dataclass(frozen=True)
class Client(ClientMixin):
    """One registered client, as Authlib's :class:`~authlib.oauth2.rfc6749.ClientMixin` expects."""

    client_id: str
    redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    scope: str = ""
    client_secret: str | None = None
    client_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_confidential(self) -> bool:
        return bool(self.client_secret)

    @property
    def token_endpoint_auth_method(self) -> str:
        return "client_secret_basic" if self.is_confidential else "none"

    @property
    def allowed_scopes(self) -> ScopeSet:
        return ScopeSet.parse(self.scope, strict=False)

    # -- ClientMixin -------------------------------------------------------------------------------

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # SMART requires redirect_uri on every request; no default, so a missing one is an error page.
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The requested scope when the client may ask for all of it; None (-> invalid_scope) otherwise.

        Every scope must parse as SMART syntax and be covered by the registration (SMART App Launch 2.x
        "Scopes"); nothing is silently dropped, so a client never gets less than it thinks it asked for
        without being told.
        """
        if not scope or not scope.split():
            return None
        try:
            requested = ScopeSet.parse(scope)
        except ScopeSyntaxError:
            return None
        if not requested.is_subset_of(self.allowed_scopes):
            return None
        if any(c.context == ScopeContext.SYSTEM for c in requested.clinical):
            return None  # system/ scopes only through client_credentials (SMART Backend Services)
        return " ".join(dict.fromkeys(scope.split()))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return any(redirect_uri_matches(r, redirect_uri) for r in self.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        if not self.client_secret:
            return False
        return hmac.compare_digest(self.client_secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        # A confidential client always authenticates with HTTP Basic; a public one never has a secret.
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "client_credentials" and not self.is_confidential:
            return False  # RFC 6749 4.4: confidential clients only
        return grant_type in self.grant_types

    # -- configuration -----------------------------------------------------------------------------

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Client:
        try:
            client_id = data["client_id"]
        except KeyError:
            raise ValueError("a client needs a client_id") from None
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client_id must be a non-empty string")
        uris = tuple(data.get("redirect_uris", ()))
        for uri in uris:
            parts = urlsplit(uri)
            if parts.fragment or parts.scheme not in ("https", "http"):
                raise ValueError(f"client {client_id}: bad redirect URI {uri!r} (RFC 6749 3.1.2)")
            if parts.scheme == "http" and not is_loopback_uri(uri):
                raise ValueError(f"client {client_id}: plain http redirect URIs must be loopback ({uri!r})")
        secret = data.get("client_secret") or None
        grant_types = tuple(data.get("grant_types", ("authorization_code", "refresh_token")))
        scope = str(data.get("scope", ""))
        ScopeSet.parse(scope)  # a registration with a malformed scope is a configuration error
        known = {"client_id", "redirect_uris", "grant_types", "scope", "client_secret", "client_name"}
        return cls(client_id, uris, grant_types, scope, secret, str(data.get("client_name", "")),
                   {k: v for k, v in data.items() if k not in known})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"client_id": self.client_id, "client_name": self.client_name,
                               "redirect_uris": list(self.redirect_uris),
                               "grant_types": list(self.grant_types), "scope": self.scope,
                               "type": "confidential" if self.is_confidential else "public",
                               "token_endpoint_auth_method": self.token_endpoint_auth_method}
        if self.client_secret:
            out["client_secret"] = self.client_secret
        return out


class ClientRegistry:
    """The registered clients, by id."""

    def __init__(self, clients: Iterable[Client]) -> None:
        self._clients: dict[str, Client] = {}
        for c in clients:
            if c.client_id in self._clients:
                raise ValueError(f"client {c.client_id!r} registered twice")
            self._clients[c.client_id] = c

    def get(self, client_id: str | None) -> Client | None:
        return self._clients.get(client_id) if isinstance(client_id, str) else None

    def __iter__(self) -> Iterator[Client]:
        return iter(self._clients.values())

    def __len__(self) -> int:
        return len(self._clients)


def load_clients(path: str | Path) -> list[Client]:
    """Read a clients file (``{"clients": [...]}`` or a bare list)."""
    data = json.loads(Path(path).read_text())
    items = data.get("clients", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected {{\"clients\": [...]}}")
    return [Client.from_json(item) for item in items]


def demo_clients_json(secret_factory: Any = None) -> dict[str, Any]:
    """The demo registrations: the kit's public client and two confidential clients."""
    make = secret_factory or (lambda: secrets.token_urlsafe(24))
    return {"clients": [
        {"client_id": KIT_CLIENT_ID, "client_name": "s4s-jupyter research kit",
         "redirect_uris": list(KIT_REDIRECT_URIS), "grant_types": ["authorization_code", "refresh_token"],
         "scope": KIT_SCOPE},
        {"client_id": BROKER_CLIENT_ID, "client_name": "s4s FHIR broker", "client_secret": make(),
         "grant_types": ["client_credentials"], "scope": SYSTEM_SCOPE},
        {"client_id": INTROSPECTION_CLIENT_ID, "client_name": "s4s token introspection service",
         "client_secret": make(), "grant_types": ["client_credentials"], "scope": SYSTEM_SCOPE},
    ]}


def ensure_demo_clients_file(path: Path) -> Path:
    """Create the demo clients file with fresh random secrets on first start; keep it afterwards, with the
    kit's public registration brought up to date (:func:`refresh_demo_kit_client`).

    Other roles of the demo (broker, introspection service) read their secret from this file.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, demo_clients_json())
        return path
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return path  # not ours to repair: load_clients reports it
    if refresh_demo_kit_client(data):
        _write_private(path, data)
    return path


def refresh_demo_kit_client(data: Any) -> bool:
    """Bring the kit's demo registration in a clients file (as parsed JSON, changed in place) up to date:
    a data folder made by an older version gets the redirect URIs and scopes the kit uses now.

    Only the public registration with client id :data:`KIT_CLIENT_ID` is touched, and only additively:
    the current :data:`KIT_REDIRECT_URIS` and :data:`KIT_SCOPE` are added to what it lists (a redirect URI
    or scope someone added by hand stays). Confidential registrations, their secrets, and registrations
    someone added are left exactly as they are. Returns whether anything changed.
    """
    items = data.get("clients") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return False
    changed = False
    for item in items:
        if not isinstance(item, dict) or item.get("client_id") != KIT_CLIENT_ID or item.get("client_secret"):
            continue
        uris = item.get("redirect_uris")
        scope = item.get("scope")
        if not isinstance(uris, list) or not isinstance(scope, str):
            continue
        merged_uris = [*uris, *(u for u in KIT_REDIRECT_URIS if u not in uris)]
        merged_scope = " ".join(dict.fromkeys([*scope.split(), *KIT_SCOPE.split()]))
        if merged_uris != uris or merged_scope != scope:
            item["redirect_uris"], item["scope"] = merged_uris, merged_scope
            changed = True
    return changed


def _write_private(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically, readable by the owner only from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def demo_client(data_dir: Path, client_id: str) -> Client:
    """A demo client's registration (with its secret) from the demo data folder's clients file."""
    for c in load_clients(ensure_demo_clients_file(demo_clients_path(data_dir))):
        if c.client_id == client_id:
            return c
    raise KeyError(client_id)


def demo_clients_path(data_dir: Path) -> Path:
    """Where the demo stack keeps the EHR's clients file: ``{data_dir}/ehr/clients.json``."""
    return Path(data_dir) / "ehr" / "clients.json"
