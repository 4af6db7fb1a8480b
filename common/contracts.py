"""The messages that pass between the stages of the graph: the graph's interfaces in one place.

    Ingress ──bytes──► Validation ──ValidatedImage──► Ingress
    Ingress ──bytes, format──► Preprocessing ──DecodedImage──► Inference ──Prediction──► Ingress
    Ingress ──sha256──► Inference.lookup ──Prediction | None──► Ingress
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ValidatedImage:
    """What validation learned about an accepted body, before any decoding."""

    format: str  # jpeg, png, gif or webp, by the bytes
    sha256: str
    num_bytes: int
    width: int  # as the header declares them
    height: int


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image, cropped and resized for the model, with its original dimensions."""

    pixels: np.ndarray  # uint8, (size, size, 3)
    width: int  # as displayed, after the EXIF orientation
    height: int


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
    width: int  # the image's displayed size, carried so that a cache hit needs no decoding
    height: int


@dataclass(frozen=True)
class CacheStats:
    """A model replica's cache counters, for its metrics."""

    enabled: bool
    capacity: int
    size: int
    hits: int
    misses: int
    evictions: int
