"""The inference core: a cache in front of a model runner. Plain Python; Ray wraps it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deployments.inference.cache import PredictionCache, TopClasses
from deployments.inference.runner import ModelRunner

# Compute and cache at least this many classes, so a later request for the default top_k can be
# answered from an entry stored for a smaller one.
MIN_CACHED_CLASSES = 5


@dataclass(frozen=True)
class ScoredClass:
    class_id: int
    label: str
    score: float


@dataclass(frozen=True)
class Prediction:
    model_name: str
    model_version: str
    classes: tuple[ScoredClass, ...]  # best first
    cached: bool


class ImageClassifier:
    def __init__(self, runner: ModelRunner, cache: PredictionCache) -> None:
        self.runner = runner
        self.cache = cache
        self.spec = runner.spec

    async def classify(self, pixels: np.ndarray, sha256: str, top_k: int) -> Prediction:
        """Classify one preprocessed uint8 HxWx3 image, answering from the cache when it can."""
        key = (self.spec.identity, sha256)
        top = self.cache.get(key, top_k)
        cached = top is not None
        if not cached:
            (computed,) = await self.runner.top_classes(pixels[np.newaxis], max(top_k, MIN_CACHED_CLASSES))
            self.cache.put(key, computed)
            top = computed.first(top_k)
        return Prediction(
            model_name=self.spec.name,
            model_version=self.spec.version,
            classes=tuple(
                ScoredClass(class_id, self.spec.labels[class_id], score)
                for class_id, score in zip(top.class_ids, top.scores)
            ),
            cached=cached,
        )
