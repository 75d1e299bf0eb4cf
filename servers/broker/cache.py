"""A small time-bounded cache for authorization facts (study owner, patient MRN, introspection answers).

Entries expire after their own deadline; the cache never grows past ``max_entries`` (oldest dropped).
The clock is injected so tests can move time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, ttl: float, *, max_entries: int = 10000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        deadline, value = item
        if self.clock() >= deadline:
            del self._items[key]
            return None
        return value

    def put(self, key: K, value: V, ttl: float | None = None) -> None:
        """Store ``value`` for ``min(ttl, self.ttl)`` seconds (nothing if that is not positive)."""
        life = self.ttl if ttl is None else min(ttl, self.ttl)
        if life <= 0:
            return
        self._items[key] = (self.clock() + life, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
