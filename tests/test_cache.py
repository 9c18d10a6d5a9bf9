"""Bounded cache: eviction by bytes and one computation per key under concurrency."""

import threading
import time

import torch

from lib.cache import BoundedCache


def test_eviction_keeps_the_most_recent_within_the_byte_budget():
    cache = BoundedCache(max_bytes=3 * 400)
    for key in range(4):
        cache.put(key, torch.zeros(100))  # 400 bytes each
    assert 0 not in cache and all(k in cache for k in (1, 2, 3))
    cache.get(1)
    cache.put(4, torch.zeros(100))
    assert 2 not in cache and 1 in cache and cache.bytes_used == 1200


def test_concurrent_misses_compute_once():
    cache = BoundedCache(max_bytes=1 << 20)
    calls = []

    def compute():
        calls.append(1)
        time.sleep(0.2)
        return torch.ones(10)

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False] + [True] * 5
    assert cache.stats.misses == 1 and cache.stats.hits == 5


def test_discard_by_predicate():
    cache = BoundedCache(max_bytes=1 << 20)
    cache.put(("a", "v1"), torch.zeros(1))
    cache.put(("b", "v2"), torch.zeros(1))
    assert cache.discard(lambda k: k[1] != "v2") == 1
    assert ("b", "v2") in cache and len(cache) == 1
