"""How far reduced precision moves the answers: MODEL_PRECISION=bf16 against f32, on OpenVINO.

    python -m loadtests.precision_agreement [--out docs/precision.json]

Every photograph the installed packages ship (scikit-image's and matplotlib's), each as is and as
eleven variants (mirror, four corner crops, a centre crop, rotations, grey, darker, smaller), so
well over 200 real images, preprocessed as the service does. Prints and writes top-1 and top-5
agreement and the largest probability difference, plus the forward-pass time of each precision.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from common.settings import Settings
from deployments.inference.runtimes import load_runtime
from deployments.inference.spec import model_spec_from_settings
from deployments.preprocessing import ImageDecoder
from loadtests.payloads import encode, shipped_photos


def variants(image: Image.Image) -> list[Image.Image]:
    width, height = image.size
    corner_w, corner_h = int(width * 0.6), int(height * 0.6)
    return [
        image, ImageOps.mirror(image),
        image.crop((0, 0, corner_w, corner_h)), image.crop((width - corner_w, 0, width, corner_h)),
        image.crop((0, height - corner_h, corner_w, height)),
        image.crop((width - corner_w, height - corner_h, width, height)),
        image.crop((width // 4, height // 4, width * 3 // 4, height * 3 // 4)),
        image.rotate(10, expand=True), image.rotate(-15, expand=True),
        ImageOps.grayscale(image).convert("RGB"), ImageEnhance.Brightness(image).enhance(0.6),
        image.resize((max(1, width // 3), max(1, height // 3))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = Settings.from_env({})
    spec = model_spec_from_settings(settings)
    decoder = ImageDecoder(spec.geometry, settings.max_image_pixels, settings.max_image_side)
    images = []
    for data in shipped_photos().values():
        with Image.open(io.BytesIO(data)) as opened:
            photo = opened.convert("RGB")
        images += [decoder.decode(encode(v, "PNG"), "png").pixels for v in variants(photo)]
    runtimes = {p: load_runtime(spec, "openvino", p, "cpu", 1, settings.compiled_model_dir) for p in ("f32", "bf16")}
    probabilities, ms = {}, {}
    for precision, runtime in runtimes.items():
        times, rows = [], []
        for pixels in images:
            start = time.perf_counter()
            rows.append(runtime.forward(pixels[np.newaxis])[0])
            times.append((time.perf_counter() - start) * 1000)
        probabilities[precision], ms[precision] = np.stack(rows), statistics.median(times)
    f32, bf16 = probabilities["f32"], probabilities["bf16"]
    top5_f32, top5_bf16 = np.argsort(-f32, axis=1)[:, :5], np.argsort(-bf16, axis=1)[:, :5]
    report = {
        "images": len(images),
        "top1_agreement": float((top5_f32[:, 0] == top5_bf16[:, 0]).mean()),
        "top5_same_classes": float(np.mean([set(a) == set(b) for a, b in zip(top5_f32, top5_bf16)])),
        "f32_top1_in_bf16_top5": float(np.mean([a[0] in b for a, b in zip(top5_f32, top5_bf16)])),
        "max_probability_difference": float(np.abs(f32 - bf16).max()),
        "median_forward_ms": ms,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
