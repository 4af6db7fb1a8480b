"""Runs a model's forward passes on one dedicated thread: the thread that built its runtime.

Torch's OpenMP runtime is markedly slower when a model is called from a thread other than the one
that loaded it, and concurrent forward passes on a small CPU only fight over cores. One thread per
replica serialises them; Serve's queue and autoscaling add parallelism across replicas instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

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
        # The health probe's forward pass in flight, and when it was sent (time.monotonic).
        self._probe: Future | None = None
        self._probe_sent = 0.0
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

    async def probe(self, deadline_s: float, wait_s: float = 1.0) -> None:
        """Raise if the runner's thread has not finished a probe pass within ``deadline_s``, or if
        that pass failed.

        A live model object proves nothing, so a probe is a forward pass on the runner's thread,
        behind the requests' passes: it fails when the thread is wedged or busy past the deadline,
        or when the forward pass itself fails. A call waits at most ``wait_s`` for its pass; one
        still running, and younger than the deadline, is left in flight and judged by the next
        call. So a check answers in about ``wait_s``, and a health checker that calls every few
        seconds sees a wedged thread fail each call once the deadline has passed, instead of one
        call hanging for the whole deadline.
        """
        if self._probe is None:
            size = self.spec.geometry.size
            self._probe = self._executor.submit(self._top_classes, np.zeros((1, size, size, 3), np.uint8), 1)
            self._probe_sent = time.monotonic()
        # Held here: a concurrent call (a readiness check beside a health check) may clear the field.
        probe, sent = self._probe, self._probe_sent
        waited_until = time.monotonic() + wait_s
        while not probe.done() and time.monotonic() < waited_until:
            # Polled, not awaited through wrap_future: the future outlives the event loop of a call.
            await asyncio.sleep(0.01)
        if not probe.done():
            age = time.monotonic() - sent
            if age > deadline_s:
                raise RuntimeError(f"model runner has not finished a forward pass in {age:.0f} s "
                                   f"(deadline {deadline_s:g} s)")
            return
        if self._probe is probe:
            self._probe = None
        probe.result()  # a failed forward pass raises here
