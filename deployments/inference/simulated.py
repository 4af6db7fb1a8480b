"""A stand-in model for benchmarks and tests of batching: its forward pass costs a fixed time per
batch, whatever the batch size, plus an optional time per image, as a GPU's does.

Chosen only by its import path in ``MODEL_RUNTIME``, e.g.
``deployments.inference.simulated:SimulatedRuntime?batch_ms=30&image_ms=0.5``; it never serves by
default. It waits in ``time.sleep``, which releases the GIL the way a GPU kernel launch and
synchronise do, so the replica's event loop and other threads run meanwhile. Its probabilities are
a deterministic function of the pixels, so the cache and repeated requests behave as with a model.
"""

from __future__ import annotations

import logging
import time
import zlib

import numpy as np

from common.console import CONSOLE
from deployments.inference.spec import ModelSpec

logger = logging.getLogger("ray.serve")


class SimulatedRuntime:
    precision = "f32"

    def __init__(self, spec: ModelSpec, batch_ms: float = 30.0, image_ms: float = 0.0) -> None:
        if batch_ms < 0 or image_ms < 0:
            raise ValueError(f"simulated model: batch_ms={batch_ms} and image_ms={image_ms} must be >= 0")
        self.name = f"simulated ({batch_ms:g} ms per batch + {image_ms:g} ms per image)"
        self._batch_s = batch_ms / 1000
        self._image_s = image_ms / 1000
        self._num_classes = spec.num_classes
        logger.warning("SIMULATED MODEL: %s; answers are not classifications of the image (MODEL_RUNTIME)",
                       self.name, extra=CONSOLE)

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        time.sleep(self._batch_s + self._image_s * len(pixels))
        return np.stack([self._probabilities(image) for image in pixels])

    def _probabilities(self, image: np.ndarray) -> np.ndarray:
        logits = np.random.default_rng(zlib.crc32(image.tobytes())).standard_normal(self._num_classes)
        exp = np.exp(logits - logits.max())
        return (exp / exp.sum()).astype(np.float32)
