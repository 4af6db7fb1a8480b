"""Per-replica LRU cache of predictions, keyed by model identity and image content hash."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from common.contracts import CacheStats


@dataclass(frozen=True)
class TopClasses:
    """The compact cached result: class ids and scores, best first."""

    class_ids: tuple[int, ...]
    scores: tuple[float, ...]

    def first(self, k: int) -> TopClasses:
        return TopClasses(self.class_ids[:k], self.scores[:k])


@dataclass(frozen=True)
class CacheEntry:
    """What a cache hit needs to answer without decoding: the top classes and the image's size
    and format."""

    top: TopClasses
    width: int
    height: int
    format: str

    def first(self, k: int) -> CacheEntry:
        return CacheEntry(self.top.first(k), self.width, self.height, self.format)


class PredictionCache:
    """A bounded LRU of :class:`CacheEntry`. Not thread-safe: use it from one event loop.

    A stored entry answers a request only if it holds at least the requested number of classes;
    otherwise the lookup is a miss and the fresh, longer result replaces it.

    A hit is counted by :meth:`get`, a miss by :meth:`put`, when the image it was for has been
    classified: a lookup for an upload that validation or decoding then rejects counts nothing.
    """

    def __init__(self, capacity: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self._entries: OrderedDict[tuple[str, str], CacheEntry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.resize(capacity)

    def get(self, key: tuple[str, str], top_k: int) -> CacheEntry | None:
        if not self.enabled:
            return None
        entry = self._entries.get(key)
        if entry is None or len(entry.top.class_ids) < top_k:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.first(top_k)

    def resize(self, capacity: int) -> None:
        """Hold at most ``capacity`` entries from now on; shrinking evicts the least recently used."""
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._evict_past_capacity()

    def put(self, key: tuple[str, str], value: CacheEntry) -> None:
        """Store a freshly classified image's entry, counting the miss that made it necessary."""
        if not self.enabled:
            return
        self.misses += 1
        if self.capacity == 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        self._evict_past_capacity()

    def _evict_past_capacity(self) -> None:
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evictions += 1

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> CacheStats:
        return CacheStats(
            enabled=self.enabled,
            capacity=self.capacity,
            size=len(self._entries),
            hits=self.hits,
            misses=self.misses,
            evictions=self.evictions,
        )
