"""Device check: the model runner on CUDA gives the CPU's answers, and how fast each is.

    python -m loadtests.cuda_check            # on a machine with a CUDA build of torch

Needs only torch, numpy, Pillow, matplotlib (for the sample photo) and the weights package; no Ray.
Prints one JSON object: top-5 agreement, the largest probability difference, and median forward
pass times for batch 1 and 8 on each device.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import numpy as np
import torch

from common.settings import Settings
from deployments.inference.runner import ModelRunner
from deployments.inference.runtimes import TorchRuntime
from deployments.inference.spec import InputGeometry, model_spec_from_settings
from deployments.preprocessing import ImageDecoder
from loadtests.payloads import distinct_photos


def photo_inputs(geometry: InputGeometry, count: int) -> np.ndarray:
    """``count`` rotations of the sample photo, preprocessed as the service does, as uint8 NHWC."""
    decoder = ImageDecoder(geometry, max_pixels=40_000_000, max_side=16384)
    return np.stack([decoder.decode(jpeg, "jpeg").pixels for jpeg in distinct_photos(count, size=(512, 600))])


def median_ms(runner: ModelRunner, batch: np.ndarray, repeats: int) -> float:
    async def timed() -> list[float]:
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            await runner.top_classes(batch, 5)
            samples.append((time.perf_counter() - start) * 1000)
        return samples

    return statistics.median(asyncio.run(timed()))


def main() -> None:
    spec = model_spec_from_settings(Settings.from_env({}))
    batch = photo_inputs(spec.geometry, 8)
    runners = {device: ModelRunner(spec, lambda d=device: TorchRuntime(spec, d, num_threads=1))
               for device in ("cpu", "cuda")}
    tops = {d: asyncio.run(r.top_classes(batch, 5)) for d, r in runners.items()}
    same_top5 = sum(a.class_ids == b.class_ids for a, b in zip(tops["cpu"], tops["cuda"]))
    max_diff = max(abs(x - y) for a, b in zip(tops["cpu"], tops["cuda"]) for x, y in zip(a.scores, b.scores))
    report = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0),
        "top1_label": spec.labels[tops["cuda"][0].class_ids[0]],
        "images_with_identical_top5": f"{same_top5}/{len(batch)}",
        "max_top5_probability_difference": max_diff,
        "median_ms": {
            device: {f"batch{n}": round(median_ms(runner, batch[:n], 30), 2) for n in (1, 8)}
            for device, runner in runners.items()
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
