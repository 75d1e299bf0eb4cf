"""Sign-in throttle: limits online password guessing per account and per client address.

Without it, 5 failed sign-ins end one authorization request (``pages.MAX_LOGIN_ATTEMPTS``), but anyone
can open new requests and guess on. RFC 9700 and NIST SP 800-63B 5.2.2 ("Rate Limiting (Throttling)") ask
the verifier to limit consecutive failed attempts on an account; OWASP's Authentication Cheat Sheet adds
the per-address limit against one host spraying many accounts.

Each key (``account:{username}``, case-folded, known or not; ``address:{client IP}``) holds a *leaky
bucket*: every attempt adds one, the level drains at ``limit / window`` per second. An attempt is refused
while the level would exceed ``limit``: after ``limit`` failures in quick succession the key is refused,
and one more attempt is allowed every ``window / limit`` seconds (the sustained rate is ``limit`` per
``window``). An attempt is charged *before* the password is checked, under one lock, so concurrent
guesses cannot slip past the check while scrypt runs; a right password then resets the account's bucket
and refunds the address's charge (a success does not clear the address: a guesser holding one valid
login could otherwise reset its address between guesses at other accounts).

A refused attempt checks no password at all: the answer (429) is the same whether the password was right
or not. State lives in the authorization server's SQLite file (table ``login_throttle``), so restarting
the EHR does not hand out a fresh allowance. Usernames and addresses are stored as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS login_throttle (
    key_hash TEXT PRIMARY KEY,
    level REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


def _key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


class LoginThrottle:
    """Per-account and per-address leaky buckets of sign-in attempts, kept in SQLite."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time, *, account_limit: int = 10,
                 address_limit: int = 100, window: float = 900.0) -> None:
        if min(account_limit, address_limit) < 1 or window <= 0:
            raise ValueError("throttle limits must be >= 1 and the window positive")
        self.clock = clock
        self.window = window
        self.limits = {"account": account_limit, "address": address_limit}
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _keys(self, username: str, address: str) -> list[tuple[str, int]]:
        keys = []
        if username.strip():
            keys.append((_key("account", username.strip().casefold()), self.limits["account"]))
        if address:
            keys.append((_key("address", address), self.limits["address"]))
        return keys

    def _level(self, key: str, limit: int, now: float) -> float:
        row = self._db.execute("SELECT level, updated_at FROM login_throttle WHERE key_hash = ?",
                               (key,)).fetchone()
        if row is None:
            return 0.0
        level, updated = float(row[0]), float(row[1])
        return max(0.0, level - max(0.0, now - updated) * limit / self.window)

    def attempt(self, username: str, address: str) -> float | None:
        """Charge one sign-in attempt. None: go on and check the password; else the attempt is refused
        and the number of seconds until one more is allowed (for ``Retry-After``)."""
        with self._lock:
            now = self.clock()
            keys = self._keys(username, address)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                levels = [(key, limit, self._level(key, limit, now)) for key, limit in keys]
                wait = max((((level + 1 - limit) * self.window / limit) for _, limit, level in levels
                            if level + 1 > limit + 1e-9), default=None)
                if wait is None:
                    for key, _limit, level in levels:
                        self._db.execute("INSERT OR REPLACE INTO login_throttle VALUES (?, ?, ?)",
                                         (key, level + 1, now))
                # buckets that have drained completely are forgotten
                self._db.execute("DELETE FROM login_throttle WHERE updated_at < ?", (now - self.window,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return None if wait is None else max(1.0, math.ceil(wait))

    def succeeded(self, username: str, address: str) -> None:
        """The charged attempt was a successful sign-in: reset the account, refund the address."""
        with self._lock:
            now = self.clock()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key, limit in self._keys(username, address):
                    if key == _key("account", username.strip().casefold()):
                        self._db.execute("DELETE FROM login_throttle WHERE key_hash = ?", (key,))
                    else:
                        level = max(0.0, self._level(key, limit, now) - 1)
                        self._db.execute("INSERT OR REPLACE INTO login_throttle VALUES (?, ?, ?)",
                                         (key, level, now))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
