"""Model runtimes behind one seam, chosen by ``MODEL_RUNTIME``: eager torch, OpenVINO compiled
from the same torch module, or a runtime named by its import path (the simulated model of the
benchmarks).

Every runtime maps a uint8 NHWC batch to float32 softmax probabilities. OpenVINO gets the spec's
normalisation and the softmax baked into its graph; the conversion runs once and its result is
kept under ``COMPILED_MODEL_DIR``, in a folder named by everything that shaped it (the weights'
hash, the normalisation, the input size, the converter's and runtime's versions). On a warm cache
nothing imports torch.

Build and call a runtime on one thread (the runner's): a runtime holds one inference request per
input shape and is not safe for concurrent ``forward`` calls.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qsl

import numpy as np

from deployments.inference.spec import ModelSpec

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("ray.serve")


class ModelRuntime(Protocol):
    name: str
    precision: str

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, num_classes) probabilities."""


def load_runtime(spec: ModelSpec, runtime: str, precision: str, device: str, num_threads: int,
                 cache_dir: Path) -> ModelRuntime:
    if runtime == "torch":
        return TorchRuntime(spec, device, num_threads)
    if ":" in runtime:
        return _imported_runtime(spec, runtime)
    return OpenVinoRuntime(_converted_to_openvino(spec, cache_dir), precision, num_threads)


def _imported_runtime(spec: ModelSpec, import_path: str) -> ModelRuntime:
    """``package.module:Factory?name=number&...``: ``Factory(spec, name=number, ...)``."""
    target, _, query = import_path.partition("?")
    module, _, attribute = target.partition(":")
    factory = getattr(importlib.import_module(module), attribute)
    return factory(spec, **{name: float(value) for name, value in parse_qsl(query, strict_parsing=bool(query))})


class TorchRuntime:
    """Eager torch, on the CPU or a CUDA device."""

    name = "torch"
    precision = "f32"

    def __init__(self, spec: ModelSpec, device: str, num_threads: int) -> None:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("MODEL_DEVICE=cuda but torch sees no CUDA device (CPU-only build?)")
        torch.set_num_threads(num_threads)  # OpenMP's setting is per thread: build on the run thread
        self._torch = torch
        self.device = torch.device(device)
        self._module = spec.load().to(self.device)
        self._mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        torch = self._torch
        # A copy: arrays that arrive through Ray are read-only views, which torch cannot wrap.
        batch = torch.tensor(pixels, device=self.device).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            return torch.softmax(self._module((batch - self._mean) / self._std), dim=1).cpu().numpy()


class OpenVinoRuntime:
    """OpenVINO on the CPU, one compiled model per batch shape: a static shape runs 5-13% faster
    than a dynamic batch, and compiling one from the converted model takes about 0.1 s."""

    name = "openvino"

    def __init__(self, model_xml: Path, precision: str, num_threads: int) -> None:
        import openvino

        self.precision = precision
        self._core = openvino.Core()
        self._model = self._core.read_model(model_xml)
        self._config = {
            # Explicit: on a CPU with bf16 units OpenVINO would pick bf16 itself, which moves answers.
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": num_threads,
        }
        self._requests: dict[tuple[int, ...], object] = {}

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        request = self._requests.get(pixels.shape)
        if request is None:
            model = self._model.clone()
            model.reshape(list(pixels.shape))
            request = self._core.compile_model(model, "CPU", self._config).create_infer_request()
            self._requests[pixels.shape] = request
        # infer() copies the output out of the request's buffer, so it survives the next call.
        return request.infer(pixels)[0]


def _converted_to_openvino(spec: ModelSpec, cache_dir: Path) -> Path:
    size = spec.geometry.size
    versions = {name: version(name) for name in ("torch", "openvino")}
    key = repr((spec.identity, spec.mean, spec.std, size, sorted(versions.items())))
    folder = cache_dir / f"{spec.name}-openvino-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if (folder / "model.xml").is_file():
        logger.info("model %s: converted model found in %s", spec.identity, folder)
    else:
        logger.info("model %s: converting to OpenVINO (first start; a few seconds), into %s", spec.identity, folder)
        started = time.monotonic()
        _build_once(folder, lambda tmp: _export_openvino(spec, tmp))
        logger.info("model %s: converted in %.1f s", spec.identity, time.monotonic() - started)
    return folder / "model.xml"


def _export_openvino(spec: ModelSpec, folder: Path) -> None:
    import openvino
    import torch

    size = spec.geometry.size
    module = _ProbabilitiesFromPixels(spec.load(), spec.mean, spec.std)
    example = torch.zeros((1, size, size, 3), dtype=torch.uint8)
    with torch.no_grad():
        model = openvino.convert_model(
            module, example_input=example, input=[openvino.PartialShape([-1, size, size, 3])]
        )
    # Keep f32 weights: by default the saved model's weights are rounded to fp16.
    openvino.save_model(model, folder / "model.xml", compress_to_fp16=False)


def _ProbabilitiesFromPixels(module: torch.nn.Module, mean, std) -> torch.nn.Module:  # noqa: N802
    """The spec's whole forward pass as one module: uint8 NHWC in, softmax probabilities out."""
    import torch

    class ProbabilitiesFromPixels(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module.eval()
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.module((pixels.permute(0, 3, 1, 2).float() - self.mean) / self.std), dim=1)

    return ProbabilitiesFromPixels().eval()


def _build_once(folder: Path, build: Callable[[Path], None]) -> None:
    """Build ``folder`` in a private temporary folder and rename it into place, so replicas that
    start together on a cold cache never see a half-written model; the first rename wins."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        build(tmp)
        os.rename(tmp, folder)
    except OSError:
        if not (folder / "model.xml").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
