"""The inference core: a cache in front of a model runner. Plain Python; Ray wraps it."""

from __future__ import annotations

import numpy as np

from common.contracts import DecodedImage, Prediction, ScoredClass
from common.errors import InvalidParameter
from deployments.inference.cache import CacheEntry, PredictionCache
from deployments.inference.runner import ModelRunner

# Compute and cache at least this many classes, so a later request for the default top_k can be
# answered from an entry stored for a smaller one.
MIN_CACHED_CLASSES = 5


class ImageClassifier:
    def __init__(self, runner: ModelRunner, cache: PredictionCache) -> None:
        self.runner = runner
        self.cache = cache
        self.spec = runner.spec

    def _key(self, sha256: str) -> tuple[str, str]:
        return (self.spec.identity, sha256)

    def check_top_k(self, top_k: int) -> None:
        if top_k > self.spec.num_classes:
            raise InvalidParameter(f"top_k={top_k} is more than the model's {self.spec.num_classes} classes")

    def cached(self, sha256: str, top_k: int) -> Prediction | None:
        """The cached prediction for these bytes, counting a hit; None on a miss, which
        :meth:`classify` counts once the image is classified."""
        self.check_top_k(top_k)
        entry = self.cache.get(self._key(sha256), top_k)
        return None if entry is None else self._prediction(entry, cached=True)

    async def classify(self, decoded: DecodedImage, sha256: str, top_k: int) -> Prediction:
        """Run the model on one preprocessed uint8 HxWx3 image and store the result. Callers ask
        :meth:`cached` first: a hit then skips decoding as well as this."""
        (prediction,) = await self.classify_batch([decoded], [sha256], [top_k])
        return prediction

    async def classify_batch(self, images: list[DecodedImage], sha256s: list[str],
                             top_ks: list[int]) -> list[Prediction]:
        """:meth:`classify` for several images in one forward pass; answers in the same order."""
        for top_k in top_ks:
            self.check_top_k(top_k)
        pixels = np.stack([decoded.pixels for decoded in images])
        tops = await self.runner.top_classes(pixels, max(*top_ks, MIN_CACHED_CLASSES))
        predictions = []
        for decoded, sha256, top_k, top in zip(images, sha256s, top_ks, tops, strict=True):
            entry = CacheEntry(top, decoded.width, decoded.height, decoded.format)
            self.cache.put(self._key(sha256), entry)
            predictions.append(self._prediction(entry.first(top_k), cached=False))
        return predictions

    def _prediction(self, entry: CacheEntry, cached: bool) -> Prediction:
        return Prediction(
            model_name=self.spec.name,
            model_version=self.spec.version,
            classes=tuple(
                ScoredClass(class_id, self.spec.labels[class_id], score)
                for class_id, score in zip(entry.top.class_ids, entry.top.scores)
            ),
            cached=cached,
            width=entry.width,
            height=entry.height,
            format=entry.format,
        )
