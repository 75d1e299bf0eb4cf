"""The authorization server's SQLite store: users, pending authorization requests, codes and tokens.

Secrets never touch the disk in clear: authorization codes, access tokens, refresh tokens and pending
request ids are opaque random strings (:func:`secrets.token_urlsafe`) stored only as SHA-256 hashes, so
a copy of the database grants nothing. Written by hand (Authlib leaves storage to the application) are
the rules RFC 6749 and RFC 9700 put on it:

- codes are single use and short-lived; presenting a used code again revokes every token issued from it
  (RFC 6749 4.1.2, RFC 9700 4.2.4);
- refresh tokens rotate; presenting a rotated refresh token again revokes the whole family, i.e. every
  token descended from the same authorization (RFC 9700 4.14.2);
- all tokens of one authorization share a ``grant_id``, the unit of revocation (RFC 7009 2.1).
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, TokenMixin

from .users import User, hash_password, verify_password

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    patient_ids TEXT NOT NULL,
    fhir_user TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_requests (
    id_hash TEXT PRIMARY KEY,
    params TEXT NOT NULL,
    username TEXT,
    patient TEXT,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS codes (
    code_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    username TEXT NOT NULL,
    patient TEXT,
    code_challenge TEXT NOT NULL,
    code_challenge_method TEXT NOT NULL,
    nonce TEXT,
    expires_at REAL NOT NULL,
    used_at REAL
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY,
    grant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    username TEXT,
    patient TEXT,
    scope TEXT NOT NULL,
    fhir_user TEXT,
    id_token_issued INTEGER NOT NULL DEFAULT 0,
    access_hash TEXT NOT NULL UNIQUE,
    issued_at REAL NOT NULL,
    access_expires_at REAL NOT NULL,
    refresh_hash TEXT UNIQUE,
    refresh_expires_at REAL,
    refresh_used_at REAL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS tokens_grant ON tokens (grant_id);
"""


def token_hash(value: str) -> str:
    """The SHA-256 (hex) under which a code, token or request id is stored."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def new_secret(nbytes: int = 32) -> str:
    """A fresh opaque secret (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)


@dataclass(frozen=True)
class GrantContext:
    """Who granted what to whom: the "user" Authlib passes from the code to the tokens.

    ``grant_id`` names the authorization every token descends from (the revocation family).
    """

    user: User | None
    patient: str | None
    grant_id: str
    nonce: str | None = None


@dataclass(frozen=True)
class PendingRequest:
    """An authorization request between the authorize endpoint and the user's decision."""

    params: dict[str, str]
    username: str | None
    patient: str | None
    expires_at: float


@dataclass(frozen=True)
class AuthorizationCode(AuthorizationCodeMixin):
    code_hash: str
    grant_id: str
    client_id: str
    redirect_uri: str
    scope: str
    username: str
    patient: str | None
    code_challenge: str
    code_challenge_method: str
    nonce: str | None
    expires_at: float
    used_at: float | None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass(frozen=True)
class Token(TokenMixin):
    """A stored token set (an access token and, perhaps, its refresh token). ``now`` is the store's
    clock reading when the row was read; ``as_refresh`` says which of the two was presented."""

    id: int
    grant_id: str
    client_id: str
    username: str | None
    patient: str | None
    scope: str
    fhir_user: str | None
    id_token_issued: bool
    issued_at: float
    access_expires_at: float
    refresh_expires_at: float | None
    refresh_used_at: float | None
    revoked_at: float | None
    now: float
    as_refresh: bool = False

    def check_client(self, client: Any) -> bool:
        return bool(client) and client.get_client_id() == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.access_expires_at - self.issued_at)

    def is_expired(self) -> bool:
        if self.as_refresh:
            return self.refresh_expires_at is None or self.now >= self.refresh_expires_at
        return self.now >= self.access_expires_at

    def is_revoked(self) -> bool:
        return self.revoked_at is not None or (self.as_refresh and self.refresh_used_at is not None)

    def is_active(self) -> bool:
        return not self.is_expired() and not self.is_revoked()

    def get_user(self) -> str | None:
        return self.username

    def get_client(self) -> Any:  # Authlib's TokenMixin API; the registry resolves the id
        return self.client_id


class OAuthStore:
    """SQLite persistence of the authorization server. Thread-safe (one connection, one lock)."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.clock = clock
        self._lock = threading.RLock()
        self._failures: dict[str, int] = {}
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._db.execute(sql, args).fetchone()
            return row

    # -- users -------------------------------------------------------------------------------------

    def add_user(self, username: str, password: str, display_name: str, patient_ids: tuple[str, ...],
                 fhir_user: str) -> None:
        """Create a login, or leave an existing one alone (users are seeded on first start)."""
        if self._one("SELECT 1 FROM users WHERE username = ?", (username,)):
            return
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO users VALUES (?, ?, ?, ?, ?)",
                       (username, display_name, hash_password(password), json.dumps(list(patient_ids)),
                        fhir_user))

    def _user(self, row: sqlite3.Row) -> User:
        return User(row["username"], row["display_name"], tuple(json.loads(row["patient_ids"])),
                    row["fhir_user"])

    def user(self, username: str | None) -> User | None:
        if not username:
            return None
        row = self._one("SELECT * FROM users WHERE username = ?", (username,))
        return self._user(row) if row else None

    def users(self) -> list[User]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM users ORDER BY rowid").fetchall()
        return [self._user(r) for r in rows]

    def authenticate_user(self, username: str, password: str) -> User | None:
        """The user when ``password`` is right; None otherwise (an unknown name costs the same time)."""
        row = self._one("SELECT * FROM users WHERE username = ?", (username,))
        stored = row["password_hash"] if row else _dummy_hash()
        ok = verify_password(password, stored)
        return self._user(row) if row and ok else None

    # -- pending authorization requests ------------------------------------------------------------

    def create_pending(self, params: dict[str, str], lifetime: float) -> str:
        """Keep a validated authorization request server-side; returns its (secret) id."""
        request_id = new_secret()
        with self._tx() as db:
            db.execute("DELETE FROM pending_requests WHERE expires_at <= ?", (self.clock(),))
            db.execute("INSERT INTO pending_requests VALUES (?, ?, NULL, NULL, ?)",
                       (token_hash(request_id), json.dumps(params), self.clock() + lifetime))
        return request_id

    def pending(self, request_id: str | None) -> PendingRequest | None:
        if not request_id:
            return None
        row = self._one("SELECT * FROM pending_requests WHERE id_hash = ? AND expires_at > ?",
                        (token_hash(request_id), self.clock()))
        if not row:
            return None
        return PendingRequest(json.loads(row["params"]), row["username"], row["patient"], row["expires_at"])

    def update_pending(self, request_id: str, *, username: str | None = None,
                       patient: str | None = None) -> None:
        with self._tx() as db:
            if username is not None:
                db.execute("UPDATE pending_requests SET username = ? WHERE id_hash = ?",
                           (username, token_hash(request_id)))
            if patient is not None:
                db.execute("UPDATE pending_requests SET patient = ? WHERE id_hash = ?",
                           (patient, token_hash(request_id)))

    def count_failed_login(self, request_id: str) -> int:
        """Count one failed sign-in for a pending request; returns the failures so far (kept in memory:
        a pending request lives minutes)."""
        key = token_hash(request_id)
        with self._lock:
            self._failures[key] = self._failures.get(key, 0) + 1
            return self._failures[key]

    def drop_pending(self, request_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM pending_requests WHERE id_hash = ?", (token_hash(request_id),))
        with self._lock:
            self._failures.pop(token_hash(request_id), None)

    def take_pending(self, request_id: str) -> PendingRequest | None:
        """Remove and return a pending request (a decision is made once)."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM pending_requests WHERE id_hash = ? AND expires_at > ?",
                             (token_hash(request_id), self.clock())).fetchone()
            db.execute("DELETE FROM pending_requests WHERE id_hash = ?", (token_hash(request_id),))
        if not row:
            return None
        return PendingRequest(json.loads(row["params"]), row["username"], row["patient"], row["expires_at"])

    # -- authorization codes -----------------------------------------------------------------------

    def save_code(self, code: str, *, client_id: str, redirect_uri: str, scope: str, username: str,
                  patient: str | None, code_challenge: str, code_challenge_method: str,
                  nonce: str | None, lifetime: float) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO codes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                       (token_hash(code), new_secret(16), client_id, redirect_uri, scope, username, patient,
                        code_challenge, code_challenge_method, nonce, self.clock() + lifetime))

    def find_code(self, code: str, client_id: str) -> AuthorizationCode | None:
        """A live code issued to ``client_id``. A used code revokes its tokens (RFC 6749 4.1.2)."""
        row = self._one("SELECT * FROM codes WHERE code_hash = ?", (token_hash(code),))
        if not row or row["client_id"] != client_id:
            return None
        if row["used_at"] is not None:
            self.revoke_grant(row["grant_id"])
            return None
        if row["expires_at"] <= self.clock():
            return None
        return AuthorizationCode(**dict(row))

    def mark_code_used(self, code: AuthorizationCode) -> bool:
        """Mark a code used; False when it was used already (a concurrent exchange lost the race)."""
        with self._tx() as db:
            cur = db.execute("UPDATE codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL",
                             (self.clock(), code.code_hash))
            return cur.rowcount == 1

    # -- tokens ------------------------------------------------------------------------------------

    def save_token(self, *, grant_id: str, client_id: str, username: str | None, patient: str | None,
                   scope: str, fhir_user: str | None, id_token_issued: bool, access_token: str,
                   expires_in: int, refresh_token: str | None, refresh_lifetime: float) -> None:
        now = self.clock()
        with self._tx() as db:
            db.execute(
                "INSERT INTO tokens (grant_id, client_id, username, patient, scope, fhir_user,"
                " id_token_issued, access_hash, issued_at, access_expires_at, refresh_hash,"
                " refresh_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (grant_id, client_id, username, patient, scope, fhir_user, int(id_token_issued),
                 token_hash(access_token), now, now + expires_in,
                 token_hash(refresh_token) if refresh_token else None,
                 now + refresh_lifetime if refresh_token else None))

    def _token(self, row: sqlite3.Row, as_refresh: bool) -> Token:
        return Token(row["id"], row["grant_id"], row["client_id"], row["username"], row["patient"],
                     row["scope"], row["fhir_user"], bool(row["id_token_issued"]), row["issued_at"],
                     row["access_expires_at"], row["refresh_expires_at"], row["refresh_used_at"],
                     row["revoked_at"], self.clock(), as_refresh)

    def find_access_token(self, access_token: str) -> Token | None:
        row = self._one("SELECT * FROM tokens WHERE access_hash = ?", (token_hash(access_token),))
        return self._token(row, False) if row else None

    def find_refresh_token(self, refresh_token: str) -> Token | None:
        row = self._one("SELECT * FROM tokens WHERE refresh_hash = ?", (token_hash(refresh_token),))
        return self._token(row, True) if row else None

    def rotate_refresh_token(self, token: Token) -> bool:
        """Mark a refresh token used (rotated); False if it was used already."""
        with self._tx() as db:
            cur = db.execute("UPDATE tokens SET refresh_used_at = ? WHERE id = ? AND refresh_used_at IS NULL",
                             (self.clock(), token.id))
            return cur.rowcount == 1

    def revoke_grant(self, grant_id: str) -> None:
        """Revoke every token of one authorization, and any code of it not yet used."""
        now = self.clock()
        with self._tx() as db:
            db.execute("UPDATE tokens SET revoked_at = ? WHERE grant_id = ? AND revoked_at IS NULL",
                       (now, grant_id))
            db.execute("UPDATE codes SET used_at = ? WHERE grant_id = ? AND used_at IS NULL", (now, grant_id))


@functools.cache
def _dummy_hash() -> str:
    return hash_password("not a password of anyone", salt=b"s4s-dummy-salt..")
