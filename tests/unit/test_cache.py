import pytest

from deployments.inference.cache import CacheEntry, PredictionCache, TopClasses
from deployments.inference.deployment import cache_size_from

MODEL = "model@1"


def top(n: int, first: int = 0) -> CacheEntry:
    classes = TopClasses(tuple(range(first, first + n)), tuple(1.0 / (i + 1) for i in range(n)))
    return CacheEntry(classes, width=640, height=480, format="jpeg")


def test_miss_then_hit_counts():
    cache = PredictionCache(4)
    assert cache.get((MODEL, "a"), 5) is None
    cache.put((MODEL, "a"), top(5))
    assert cache.get((MODEL, "a"), 5) == top(5)
    assert cache.get((MODEL, "a"), 5).first(3) == top(3)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.evictions, stats.size) == (2, 1, 0, 1)


def test_least_recently_used_entry_is_evicted():
    cache = PredictionCache(2)
    cache.put((MODEL, "a"), top(5))
    cache.put((MODEL, "b"), top(5))
    cache.get((MODEL, "a"), 5)  # "a" is now the most recent
    cache.put((MODEL, "c"), top(5))
    assert cache.get((MODEL, "b"), 5) is None
    assert cache.get((MODEL, "a"), 5) is not None
    assert cache.get((MODEL, "c"), 5) is not None
    assert cache.evictions == 1
    assert len(cache) == 2


def test_model_identity_is_part_of_the_key():
    cache = PredictionCache(4)
    cache.put(("model@1", "a"), top(5))
    assert cache.get(("model@2", "a"), 5) is None


def test_entry_too_short_for_the_request_is_a_miss():
    cache = PredictionCache(4)
    cache.put((MODEL, "a"), top(5))
    assert cache.get((MODEL, "a"), 10) is None
    cache.put((MODEL, "a"), top(10))
    assert cache.get((MODEL, "a"), 10) == top(10)
    assert len(cache) == 1
    assert (cache.hits, cache.misses) == (1, 2)


def test_a_lookup_whose_image_is_never_classified_counts_no_miss():
    cache = PredictionCache(4)
    for _ in range(3):  # an upload the validator then refuses: looked up, never stored
        assert cache.get((MODEL, "not-an-image"), 5) is None
    assert (cache.hits, cache.misses) == (0, 0)


def test_size_zero_counts_every_classified_image_as_a_miss():
    cache = PredictionCache(0)
    cache.put((MODEL, "a"), top(5))
    assert cache.get((MODEL, "a"), 5) is None
    assert (cache.hits, cache.misses) == (0, 1)


def test_size_zero_stores_nothing():
    cache = PredictionCache(0)
    cache.put((MODEL, "a"), top(5))
    assert cache.get((MODEL, "a"), 5) is None
    assert len(cache) == 0
    assert cache.evictions == 0


def test_disabled_cache_never_hits_or_counts():
    cache = PredictionCache(8, enabled=False)
    cache.put((MODEL, "a"), top(5))
    assert cache.get((MODEL, "a"), 5) is None
    stats = cache.stats()
    assert (stats.enabled, stats.size, stats.hits, stats.misses) == (False, 0, 0, 0)


def test_shrinking_evicts_the_least_recently_used_and_growing_keeps_everything():
    cache = PredictionCache(3)
    for key in "abc":
        cache.put((MODEL, key), top(5))
    cache.get((MODEL, "a"), 5)  # "b" is now the least recent
    cache.resize(2)
    assert cache.get((MODEL, "b"), 5) is None
    assert cache.get((MODEL, "a"), 5) is not None and cache.get((MODEL, "c"), 5) is not None
    assert (cache.stats().capacity, cache.evictions) == (2, 1)
    cache.resize(8)
    cache.put((MODEL, "d"), top(5))
    assert len(cache) == 3 and cache.evictions == 1


def test_a_user_config_sets_the_cache_size_or_names_what_is_wrong():
    assert cache_size_from({"cache_size": 128}) == 128
    assert cache_size_from({"cache_size": 0}) == 0
    for wrong in ({"cache_size": -1}, {"cache_size": "big"}, {"cache_size": True}, {"cache_size": 1.5}, {}):
        with pytest.raises(ValueError, match="cache_size must be a whole number"):
            cache_size_from(wrong)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['cache_sise'\]"):
        cache_size_from({"cache_sise": 128})
