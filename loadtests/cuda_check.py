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

import matplotlib
import numpy as np
import torch
from PIL import Image

from deployments.inference.runner import ModelRunner
from deployments.inference.spec import model_spec_from_settings
from serve_app.settings import Settings


def photo_inputs(size: int, count: int) -> np.ndarray:
    """``count`` centre crops of the sample photo at different rotations, as uint8 NHWC."""
    photo = Image.open(f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg").convert("RGB")
    crops = []
    for i in range(count):
        image = photo.rotate(i * 5)
        side = min(image.size) * 0.875
        left, top = (image.width - side) / 2, (image.height - side) / 2
        crops.append(np.asarray(image.resize((size, size), Image.Resampling.BICUBIC,
                                             box=(left, top, left + side, top + side))))
    return np.stack(crops)


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
    batch = photo_inputs(spec.geometry.size, 8)
    runners = {device: ModelRunner(spec, num_threads=1, device=device) for device in ("cpu", "cuda")}
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
