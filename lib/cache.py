"""A bounded, thread-safe LRU cache that computes each missing value once."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def nbytes(value: Any) -> int:
    """Memory held by tensors/arrays inside ``value`` (tuples, lists and dicts are walked)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    return getattr(value, "nbytes", 0)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class BoundedCache:
    """LRU cache bounded by total bytes.

    ``get_or_compute`` runs ``compute`` outside the cache lock, and concurrent callers asking for the same missing
    key wait for the first one instead of computing it again.
    """

    def __init__(self, max_bytes: int, size_of: Callable[[Any], int] = nbytes):
        self.max_bytes = int(max_bytes)
        self._size_of = size_of
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._pending: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        self._bytes = 0
        self.stats = CacheStats()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: Any) -> None:
        size = self._size_of(value)
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]
            if size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted
                self.stats.evictions += 1

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """Return ``(value, hit)``; on a miss, ``compute()`` runs once even under concurrent requests."""
        while True:
            with self._lock:
                item = self._items.get(key)
                if item is not None:
                    self._items.move_to_end(key)
                    self.stats.hits += 1
                    return item[0], True
                pending = self._pending.get(key)
                if pending is None:
                    pending = self._pending[key] = threading.Event()
                    self.stats.misses += 1
                    break
            pending.wait()
        try:
            value = compute()
            self.put(key, value)
            return value, False
        finally:
            with self._lock:
                self._pending.pop(key).set()

    def keys(self) -> list[Hashable]:
        """A snapshot of the cached keys, least recently used first."""
        with self._lock:
            return list(self._items)

    def discard(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key matches ``predicate``; returns how many were dropped."""
        with self._lock:
            stale = [k for k in self._items if predicate(k)]
            for k in stale:
                self._bytes -= self._items.pop(k)[1]
            return len(stale)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
