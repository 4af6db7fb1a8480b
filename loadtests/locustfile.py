"""Locust load test for the image-classification service.

Headless with percentiles, charts and a summary (see loadtests/__main__.py):

    python -m loadtests --host http://127.0.0.1:8000 --users 8 --spawn-rate 4 --run-time 60s --out DIR

Or the usual web UI:

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000

The traffic is a mix generated deterministically at start-up from --image-seed:
- "valid": JPEG, PNG, WebP and GIF from thumbnails to 12 MP photos, each request made unique so the
  model cache misses (16 random bytes after the image's end, which decoders ignore; for WebP, an
  extra RIFF chunk with the RIFF size updated);
- "repeated": a small set of hot images sent unchanged, to exercise the cache (--repeat-share);
- "invalid": uploads the service must refuse with 415 or 422 (--invalid-share).
Every response's status and schema are checked; a wrong one counts as a failure.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass

from locust import FastHttpUser, events, task
from PIL import Image

from loadtests.photos import encode, make_unique, sample_photo

# (width, height, weight, formats): sizes from thumbnails to a 12 MP photo. PNG and GIF stop at
# sizes whose files stay under the default 10 MiB upload limit.
SIZES = (
    (160, 120, 30, ("JPEG", "PNG", "WEBP", "GIF")),
    (640, 480, 40, ("JPEG", "PNG", "WEBP", "GIF")),
    (1600, 1200, 20, ("JPEG", "PNG", "WEBP")),
    (4000, 3000, 10, ("JPEG",)),
)
HOT_IMAGES = 8
EXPECTED_KEYS = {"request_id", "model", "image", "predictions", "cached"}


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--repeat-share", type=float, default=0.3, help="share of requests repeating a hot image")
    parser.add_argument("--invalid-share", type=float, default=0.05, help="share of invalid uploads")
    parser.add_argument("--max-megapixels", type=float, default=12.0, help="largest image size in the mix")
    parser.add_argument("--image-seed", type=int, default=0, help="seed of the generated image mix")
    parser.add_argument("--samples-file", default="", help="write every request's timing here (JSON lines)")


@dataclass
class ImageMix:
    """All payloads, generated once per process."""

    variants: list[tuple[str, bytes, int]]  # (format, bytes, weight) to make unique per request
    hot: list[bytes]
    invalid: list[tuple[bytes, int]]  # (payload, expected status)

    @classmethod
    def generate(cls, seed: int, max_megapixels: float) -> ImageMix:
        rng = random.Random(seed)
        base = sample_photo()
        variants = []
        for width, height, weight, formats in SIZES:
            if width * height > max_megapixels * 1e6:
                continue
            image = base.rotate(rng.uniform(-20, 20)).resize((width, height), Image.Resampling.BILINEAR)
            variants += [(fmt, encode(image, fmt, quality=85), weight) for fmt in formats]
        hot = [encode(base.resize((320 + 16 * i, 240)), "JPEG", quality=85) for i in range(HOT_IMAGES)]
        jpeg = encode(base.resize((320, 240)), "JPEG")
        invalid = [
            (b"RIFF\x24\x00\x00\x00AVI LIST" + b"\x00" * 28, 415),
            (b"<html><body>not an image</body></html>", 415),
            (jpeg[: len(jpeg) // 2], 422),
        ]
        return cls(variants, hot, invalid)


_mix: ImageMix | None = None
_mix_lock = threading.Lock()
_samples: list[dict] = []


def image_mix(options) -> ImageMix:
    global _mix
    with _mix_lock:
        if _mix is None:
            _mix = ImageMix.generate(options.image_seed, options.max_megapixels)
        return _mix


@events.request.add_listener
def _record(request_type, name, response_time, response_length, exception, **_) -> None:
    _samples.append({"t": time.time(), "name": name, "ms": response_time, "ok": exception is None})


@events.quitting.add_listener
def _dump_samples(environment, **_) -> None:
    path = environment.parsed_options.samples_file if environment.parsed_options else ""
    if path:
        with open(path, "w") as f:
            f.writelines(json.dumps(sample) + "\n" for sample in _samples)


class ImageClassifierUser(FastHttpUser):
    """One client posting images back to back (closed loop, no think time)."""

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.mix = image_mix(options)
        self.repeat_share = options.repeat_share
        self.invalid_share = options.invalid_share
        self.rng = random.Random(options.image_seed * 1000 + id(self) % 1000 + os.getpid())

    @task
    def classify(self) -> None:
        roll = self.rng.random()
        if roll < self.invalid_share:
            payload, expected = self.rng.choice(self.mix.invalid)
            self._post("invalid", payload, expected)
        elif roll < self.invalid_share + self.repeat_share:
            self._post("repeated", self.rng.choice(self.mix.hot), 200)
        else:
            self._post("valid", self._unique_image(), 200)

    def _unique_image(self) -> bytes:
        fmt, data, _ = self.rng.choices(self.mix.variants, weights=[w for _, _, w in self.mix.variants])[0]
        return make_unique(fmt, data, self.rng.randbytes(16))

    def _post(self, name: str, payload: bytes, expected: int) -> None:
        with self.client.post(
            "/v1/classify", data=payload, name=name, catch_response=True,
            headers={"Content-Type": "application/octet-stream"},
        ) as response:
            if response.status_code != expected:
                response.failure(f"{name}: status {response.status_code}, expected {expected}")
                return
            body = response.json()
            if expected == 200:
                if set(body) != EXPECTED_KEYS or len(body["predictions"]) != 5:
                    response.failure(f"{name}: unexpected body {str(body)[:200]}")
                    return
            elif "error" not in body or "code" not in body["error"]:
                response.failure(f"{name}: no error body in {str(body)[:200]}")
                return
            response.success()  # an expected 415/422 is a success for this test
