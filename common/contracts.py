"""The messages that pass between the stages of the graph: the graph's interfaces in one place.

    Ingress ──sha256──► Inference.lookup ──Prediction | None──► Ingress    (a hit ends here)
    Ingress ──bytes──► Validation ──ValidatedImage──► Ingress
    Ingress ──bytes, format──► Preprocessing ──DecodedImage──► Ingress
    Ingress ──DecodedImage──► Inference.classify ──Prediction──► Ingress

The ingress hashes the bytes itself: the SHA-256 keys the cache and picks the Inference replica
that owns it, so a repeated image is answered after one hop, before any validation or decoding.
Every message starts and ends at the ingress, so that each call is retried on its own.
Preprocessing is bound with the model's :class:`InputGeometry`, so its output fits the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InputGeometry:
    """How preprocessing turns a decoded image into the model's square uint8 input."""

    size: int
    crop_fraction: float


@dataclass(frozen=True)
class ValidatedImage:
    """What validation learned about an accepted body, before any decoding."""

    format: str  # jpeg, png, gif or webp, by the bytes
    num_bytes: int
    width: int  # as the header declares them
    height: int


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image, cropped and resized for the model, with its original dimensions."""

    pixels: np.ndarray  # uint8, (size, size, 3)
    width: int  # as displayed, after the EXIF orientation
    height: int
    format: str


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
    # The image as the service saw it, carried so that a cache hit needs no validation or decoding.
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class CacheStats:
    """A model replica's cache counters, for its metrics."""

    enabled: bool
    capacity: int
    size: int
    hits: int
    misses: int
    evictions: int
