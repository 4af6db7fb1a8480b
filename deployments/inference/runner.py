"""Runs a model's forward passes on one dedicated thread: the thread that built its runtime.

Torch's OpenMP runtime is markedly slower when a model is called from a thread other than the one
that loaded it, and concurrent forward passes on a small CPU only fight over cores. One thread per
replica serialises them; Serve's queue and autoscaling add parallelism across replicas instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from deployments.inference.cache import TopClasses
from deployments.inference.runtimes import ModelRuntime
from deployments.inference.spec import ModelSpec


class ModelRunner:
    def __init__(self, spec: ModelSpec, build_runtime: Callable[[], ModelRuntime]) -> None:
        self.spec = spec
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-runner")
        # When the forward pass in progress should end (time.monotonic), by the last one's length.
        self._busy_until = 0.0
        self._last_forward_s = 0.0
        self.runtime = self._executor.submit(self._build, build_runtime).result()

    def _build(self, build_runtime: Callable[[], ModelRuntime]) -> ModelRuntime:
        runtime = build_runtime()
        size = self.spec.geometry.size
        # One warm-up pass so the first request does not pay for lazy initialisation.
        started = time.monotonic()
        runtime.forward(np.zeros((1, size, size, 3), dtype=np.uint8))
        self._last_forward_s = time.monotonic() - started
        return runtime

    def busy_for_s(self) -> float:
        """How much longer the forward pass in progress should take; 0 when the model is idle."""
        return max(0.0, self._busy_until - time.monotonic())

    def _top_classes(self, pixels: np.ndarray, top_k: int) -> list[TopClasses]:
        """Top ``top_k`` classes for each image of a uint8 NHWC batch."""
        started = time.monotonic()
        self._busy_until = started + self._last_forward_s
        try:
            probabilities = self.runtime.forward(pixels)
        finally:
            self._last_forward_s = time.monotonic() - started
            self._busy_until = 0.0
        best_first = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
        return [
            TopClasses(tuple(ids.tolist()), tuple(row[ids].tolist()))
            for ids, row in zip(best_first, probabilities)
        ]

    async def top_classes(self, pixels: np.ndarray, top_k: int) -> list[TopClasses]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._top_classes, pixels, top_k)

    async def probe(self, deadline_s: float) -> None:
        """Run one forward pass on the runner's thread; raise if it does not finish in time.

        A live model object proves nothing: this fails when the thread is wedged or busy past
        the deadline, or when the forward pass itself fails.
        """
        size = self.spec.geometry.size
        try:
            await asyncio.wait_for(self.top_classes(np.zeros((1, size, size, 3), np.uint8), 1), deadline_s)
        except asyncio.TimeoutError:
            raise RuntimeError(f"model runner did not finish a forward pass within {deadline_s:g} s") from None
