"""The baseline the graph replaces: one process that validates, decodes and classifies in its
request handler, as the old single-process backend did and as a user would write it.

    python -m loadtests.one_process_server --port 8100 [--runtime torch|openvino] [--threads 2] [--device cpu|cuda]

Same validator, decoder and model as the graph; no cache; served by uvicorn with one worker. With
--runtime torch (the default) it is what a user of the old backend runs today; with openvino it
has the graph's model runtime, so the benchmark shows the graph's own overhead.
Only for the benchmark (`python -m loadtests.bench`), which starts and stops it.
"""

from __future__ import annotations

import argparse

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from common.errors import ServiceError
from common.settings import Settings
from deployments.inference.runtimes import load_runtime
from deployments.inference.spec import model_spec_from_settings
from deployments.preprocessing import ImageDecoder
from deployments.validation import ImageValidator
from serve_app.http_errors import error_response


def build_app(runtime: str, threads: int, device: str) -> Starlette:
    settings = Settings.from_env({})
    spec = model_spec_from_settings(settings)
    model = load_runtime(spec, runtime, "f32", device, threads, settings.compiled_model_dir)
    validator = ImageValidator.from_settings(settings)
    decoder = ImageDecoder(spec.geometry, settings.max_image_pixels, settings.max_image_side)

    async def classify(request: Request) -> JSONResponse:
        data = await request.body()
        try:
            validated = validator.validate(data)
            decoded = decoder.decode(data, validated.format)
        except ServiceError as error:
            return error_response(error, request_id="")
        (probabilities,) = model.forward(decoded.pixels[np.newaxis])
        best = np.argsort(-probabilities)[:5]
        return JSONResponse({
            "image": {"format": validated.format, "width": decoded.width, "height": decoded.height},
            "predictions": [
                {"class_id": int(i), "label": spec.labels[int(i)], "score": float(probabilities[i])} for i in best
            ],
            "cached": False,
        })

    return Starlette(routes=[Route("/v1/classify", classify, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--runtime", choices=("torch", "openvino"), default="torch")
    parser.add_argument("--threads", type=int, default=2, help="forward-pass threads (both cores, by default)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: torch only")
    args = parser.parse_args()
    uvicorn.run(build_app(args.runtime, args.threads, args.device), host="127.0.0.1", port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
