"""Runs a model's forward passes on one dedicated thread: the thread that loaded it.

Torch's OpenMP runtime is markedly slower when a model is called from a thread other than the one
that loaded it, and concurrent forward passes on a small CPU only fight over cores. One thread per
replica serialises them; Serve's queue and autoscaling add parallelism across replicas instead.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from deployments.inference.cache import TopClasses
from deployments.inference.spec import ModelSpec

logger = logging.getLogger("ray.serve")


class ModelRunner:
    def __init__(self, spec: ModelSpec, num_threads: int, device: str = "cpu") -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("MODEL_DEVICE=cuda but torch sees no CUDA device (CPU-only build?)")
        self.spec = spec
        self.device = torch.device(device)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-runner")
        self._mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._model = self._executor.submit(self._load, num_threads).result()

    def _load(self, num_threads: int) -> torch.nn.Module:
        torch.set_num_threads(num_threads)
        model = self.spec.load().to(self.device)
        size = self.spec.geometry.size
        # One warm-up pass so the first request does not pay for lazy initialisation.
        self._forward(model, np.zeros((1, size, size, 3), dtype=np.uint8))
        return model

    def _forward(self, model: torch.nn.Module, pixels: np.ndarray) -> torch.Tensor:
        # A copy: arrays that arrive through Ray are read-only views, which torch cannot wrap.
        batch = torch.tensor(pixels, device=self.device)
        batch = batch.permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            return torch.softmax(model((batch - self._mean) / self._std), dim=1).cpu()

    def _top_classes(self, pixels: np.ndarray, top_k: int) -> list[TopClasses]:
        """Top ``top_k`` classes for each image of a uint8 NHWC batch."""
        probabilities = self._forward(self._model, pixels)
        scores, class_ids = torch.topk(probabilities, k=min(top_k, self.spec.num_classes), dim=1)
        return [
            TopClasses(tuple(ids.tolist()), tuple(vals.tolist()))
            for ids, vals in zip(class_ids, scores)
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
