"""Tokens of a SMART session and where they are kept between kernels.

:class:`TokenSet` is the token response of RFC 6749 5.1 with SMART App Launch's launch context
(``patient``, ``encounter``, ...), with the absolute expiry time computed when it was received.
:class:`TokenStore` keeps token sets in one JSON file readable by the user only (mode 0600), under the
Jupyter data directory by default; every write replaces the file atomically (write a temporary file in the
same folder, fsync, rename) under an advisory lock, so a crash or two kernels writing at once never leave a
truncated or mixed file.

Keys (:class:`LoginKeys`): per EHR and client, the **last login** (``"{client_id} {fhir_base}"``, the
only entry of earlier versions and the one the Jupyter server extension's status reads), and one entry
per **patient** (``"{client_id} {fhir_base} Patient/{id}"``), since a SMART token is bound to one patient.
A login writes both; a session bound to a patient reads and refreshes only token sets for that patient,
so two patients' logins in one notebook never mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from s4s_jupyter.core.errors import ClientError

log = logging.getLogger("s4s_jupyter.client")

#: token response members that are not launch context
_RESPONSE_FIELDS = {"access_token", "token_type", "expires_in", "scope", "refresh_token", "id_token"}


@dataclass(frozen=True)
class TokenSet:
    """An access token with what came with it (RFC 6749 5.1; SMART App Launch 2.x "launch context").

    ``expires_at`` and ``issued_at`` are seconds since the epoch (``expires_at`` None: the server gave no
    ``expires_in``; ``issued_at`` None: written by an older version). ``issued_at`` orders token sets of
    the same login: a refresh gives a newer one (:meth:`is_newer_than`). Tokens are hidden from ``repr``
    so a notebook cell that shows the object does not leak them.
    """

    access_token: str = field(repr=False)
    token_type: str = "Bearer"
    expires_at: float | None = None
    scope: str = ""
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    patient: str | None = None
    encounter: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict, hash=False)
    issued_at: float | None = None

    @classmethod
    def from_response(cls, body: Mapping[str, Any], *, now: float | None = None,
                      previous: TokenSet | None = None) -> TokenSet:
        """Build from a token endpoint's JSON answer. On a refresh, ``previous`` supplies what the answer
        may omit (the refresh token when it is not rotated, the launch context, RFC 6749 6)."""
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise ClientError("token response without access_token", status=502)
        if str(body.get("token_type", "")).lower() != "bearer":
            raise ClientError(f"unsupported token_type {body.get('token_type')!r} (expected Bearer)",
                              status=502)
        issued = time.time() if now is None else now
        expires_in = body.get("expires_in")
        context = {k: v for k, v in body.items() if k not in _RESPONSE_FIELDS | {"patient", "encounter"}}
        return cls(
            access_token=token,
            token_type="Bearer",
            expires_at=issued + float(expires_in) if isinstance(expires_in, int | float) else None,
            scope=str(body.get("scope") or (previous.scope if previous else "")),
            refresh_token=body.get("refresh_token") or (previous.refresh_token if previous else None),
            id_token=body.get("id_token") or (previous.id_token if previous else None),
            patient=body.get("patient") or (previous.patient if previous else None),
            encounter=body.get("encounter") or (previous.encounter if previous else None),
            context=context or (dict(previous.context) if previous else {}),
            issued_at=issued,
        )

    def to_json(self) -> dict[str, Any]:
        """The token set as JSON (what :class:`TokenStore` writes)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["context"] = dict(self.context)
        return out

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> TokenSet:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in body.items() if k in names})

    def is_newer_than(self, other: TokenSet | None) -> bool:
        """Whether this token set was received after ``other`` (by ``issued_at``; by ``expires_at`` when
        either lacks it). Anything is newer than None; a set is not newer than itself or an equal one."""
        if other is None:
            return True
        if self.issued_at is not None and other.issued_at is not None:
            return self.issued_at > other.issued_at
        if self.expires_at is not None and other.expires_at is not None:
            return self.expires_at > other.expires_at
        return False

    def expires_within(self, seconds: float, *, now: float | None = None) -> bool:
        """Whether the access token expires in less than ``seconds`` (False when no expiry is known)."""
        if self.expires_at is None:
            return False
        return self.expires_at - (time.time() if now is None else now) < seconds

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.scope.split())


#: the environment variable naming the token store file; the Jupyter server extension
#: (``s4s_jupyter.serverext.app.ENV_TOKEN_STORE``) exports it for the kernels it starts
ENV_TOKEN_STORE = "S4S_TOKEN_STORE"


def default_token_path() -> Path:
    """``{jupyter_data_dir}/s4s_jupyter/tokens.json`` (``jupyter --data-dir``; honours JUPYTER_DATA_DIR)."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "s4s_jupyter" / "tokens.json"


def token_store_path() -> Path:
    """Where :class:`TokenStore` keeps tokens by default: ``$S4S_TOKEN_STORE`` when set (the server
    extension's store, shared with its kernels), else :func:`default_token_path`."""
    named = os.environ.get(ENV_TOKEN_STORE, "").strip()
    return Path(named).expanduser() if named else default_token_path()


def store_key(fhir_base: str, client_id: str, patient: str | None = None) -> str:
    """The key a token set is stored under: the last login at an EHR for a client, or with ``patient``
    the login for that patient."""
    key = f"{client_id} {fhir_base.rstrip('/')}"
    return key if patient is None else f"{key} Patient/{patient}"


Entries = Mapping[str, "TokenSet | None"]


def _newest(candidates: list[TokenSet]) -> TokenSet | None:
    newest: TokenSet | None = None
    for t in candidates:
        if newest is None or t.is_newer_than(newest):
            newest = t
    return newest


@dataclass(frozen=True)
class LoginKeys:
    """Where the login of one session lives in a :class:`TokenStore`.

    ``patient`` None: not bound to a patient yet, the session reads the last login at the EHR for the
    client (:attr:`last`); bound (:meth:`bound`) it also has its own entry (:attr:`own`) and only ever
    takes token sets for that patient. Token sets without a patient (no ``launch/patient`` scope) live
    under :attr:`last` alone.
    """

    fhir_base: str
    client_id: str
    patient: str | None = None

    @property
    def last(self) -> str:
        return store_key(self.fhir_base, self.client_id)

    @property
    def own(self) -> str | None:
        return store_key(self.fhir_base, self.client_id, self.patient) if self.patient else None

    def entry_keys(self) -> list[str]:
        """The store keys of this login: the last login, and the patient's own when bound."""
        return [self.last] + ([self.own] if self.own else [])

    def bound(self, patient: str | None) -> LoginKeys:
        """These keys for ``patient`` (None: unchanged)."""
        if patient is None or patient == self.patient:
            return self
        return LoginKeys(self.fhir_base, self.client_id, patient)

    def pick(self, entries: Entries) -> TokenSet | None:
        """This login's token set among ``entries``: unbound, the last login; bound, the newest of the
        patient's own entry and the last login when that one is for the same patient (an older store, or
        one the server extension wrote), never another patient's."""
        if self.patient is None:
            return entries.get(self.last)
        return _newest([t for t in (entries.get(self.own or ""), entries.get(self.last))
                        if t is not None and t.patient == self.patient])

    def login(self, entries: Entries, tokens: TokenSet) -> dict[str, TokenSet | None]:
        """The entries a new login writes: its patient's own and the last login."""
        keys = self.bound(tokens.patient)
        return {k: tokens for k in keys.entry_keys()}

    def refreshed(self, entries: Entries, tokens: TokenSet) -> dict[str, TokenSet | None]:
        """The entries a refresh of this login writes: its own, and the last login when that one is for
        the same patient and not newer (another patient's later login stays the last one)."""
        keys = self.bound(tokens.patient)
        out: dict[str, TokenSet | None] = {}
        if keys.own:
            out[keys.own] = tokens
        last = entries.get(keys.last)
        if keys.own is None or last is None or (last.patient == tokens.patient
                                                and not last.is_newer_than(tokens)):
            out[keys.last] = tokens
        return out

    def forget(self, entries: Entries) -> dict[str, TokenSet | None]:
        """The entries a logout removes: the patient's own, and the last login if it is that patient's."""
        out: dict[str, TokenSet | None] = {}
        if self.own and entries.get(self.own) is not None:
            out[self.own] = None
        last = entries.get(self.last)
        if last is not None and (self.patient is None or last.patient == self.patient):
            out[self.last] = None
        return out


class TokenStore:
    """Token sets in a JSON file of mode 0600 (its folder 0700), written atomically.

    ``path`` None means :func:`token_store_path`: ``$S4S_TOKEN_STORE``, else :func:`default_token_path`.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else token_store_path()

    def get(self, key: str) -> TokenSet | None:
        entry = self._read().get(key)
        return TokenSet.from_json(entry) if isinstance(entry, Mapping) else None

    def put(self, key: str, tokens: TokenSet) -> None:
        with self._locked():
            data = self._read()
            data[key] = tokens.to_json()
            self._write(data)

    def update(self, key: str, change: Callable[[TokenSet | None], TokenSet | None]) -> TokenSet | None:
        """Compare-and-swap: under the file lock (other kernels and the server extension wait), read the
        entry, call ``change(entry)`` and store what it returns (None deletes the entry; returning the
        entry itself writes nothing). Returns what the entry is afterwards.

        ``change`` decides on the entry as it is at that moment, so a token set read earlier can never
        overwrite a newer one written in between by another process.
        """
        with self._locked():
            data = self._read()
            entry = data.get(key)
            current = TokenSet.from_json(entry) if isinstance(entry, Mapping) else None
            new = change(current)
            if new is current:
                return current
            if new is None:
                data.pop(key, None)
            else:
                data[key] = new.to_json()
            self._write(data)
            return new

    def update_entries(self, keys: Sequence[str], change: Callable[[Entries], Mapping[str, TokenSet | None]]
                       ) -> dict[str, TokenSet | None]:
        """Compare-and-swap of several entries at once: under the file lock, read the entries of ``keys``,
        call ``change(entries)`` and write what it returns (key -> token set; None deletes; keys left
        out stay as they are; nothing returned writes nothing). Returns the entries afterwards."""
        with self._locked():
            data = self._read()
            entries: dict[str, TokenSet | None] = {}
            for key in keys:
                entry = data.get(key)
                entries[key] = TokenSet.from_json(entry) if isinstance(entry, Mapping) else None
            changes = dict(change(entries))
            if changes:
                for key, tokens in changes.items():
                    if tokens is None:
                        data.pop(key, None)
                    else:
                        data[key] = tokens.to_json()
                self._write(data)
                entries.update(changes)
            return entries

    def entries(self, keys: Sequence[str]) -> dict[str, TokenSet | None]:
        """The entries of ``keys`` as they are now (no lock: every write replaces the file whole)."""
        data = self._read()
        return {k: TokenSet.from_json(data[k]) if isinstance(data.get(k), Mapping) else None for k in keys}

    def load(self, keys: LoginKeys) -> TokenSet | None:
        """The token set of the login ``keys`` name (:meth:`LoginKeys.pick`)."""
        return keys.pick(self.entries(keys.entry_keys()))

    def save_login(self, keys: LoginKeys, tokens: TokenSet) -> None:
        """Store a new login: under its patient's entry and as the last login (:meth:`LoginKeys.login`)."""
        bound = keys.bound(tokens.patient)
        self.update_entries(bound.entry_keys(), lambda entries: bound.login(entries, tokens))

    def forget_login(self, keys: LoginKeys) -> None:
        """Remove a login (:meth:`LoginKeys.forget`)."""
        self.update_entries(keys.entry_keys(), keys.forget)

    def delete(self, key: str) -> None:
        with self._locked():
            data = self._read()
            if data.pop(key, None) is not None:
                self._write(data)

    def keys(self) -> list[str]:
        return sorted(self._read())

    # -- file handling -----------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            with self.path.open("rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    log.warning("token store %s was readable by others; restricting it to mode 0600",
                                self.path)
                    os.fchmod(f.fileno(), 0o600)
                raw = f.read()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            log.warning("token store %s is not valid JSON; ignoring its content", self.path)
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: Mapping[str, Any]) -> None:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", suffix=".tmp", dir=folder)  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), 0o600)
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
