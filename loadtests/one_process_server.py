"""The baseline the graph replaces: one process that validates, decodes and classifies in its
request handler, on torch, as the old single-process backend did and as a user would write it.

    python -m loadtests.one_process_server --port 8100 [--threads 2]

The graph's own validator, decoder and model (these imports of the service's code are what make
it the same work); no cache; served by uvicorn with one worker. Only for the benchmark
(`python -m loadtests.bench`), which starts and stops it.
"""

from __future__ import annotations

import argparse

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from common.errors import ClientError
from common.settings import Settings
from deployments.inference.runtimes import load_runtime
from deployments.inference.spec import model_spec_from_settings
from deployments.preprocessing import ImageDecoder
from deployments.validation import ImageValidator


def build_app(threads: int) -> Starlette:
    settings = Settings.from_env({})
    spec = model_spec_from_settings(settings)
    model = load_runtime(spec, "torch", "f32", "cpu", threads, settings.compiled_model_dir)
    validator = ImageValidator.from_settings(settings)
    decoder = ImageDecoder(spec.geometry, settings.max_image_pixels, settings.max_image_side)

    async def classify(request: Request) -> JSONResponse:
        data = await request.body()
        try:
            validated = validator.validate(data)
            decoded = decoder.decode(data, validated.format)
        except ClientError as error:  # the bench sends only valid images; no finer status needed
            return JSONResponse({"error": {"code": error.code, "message": error.message}}, status_code=400)
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
    parser.add_argument("--threads", type=int, default=2, help="forward-pass threads (both cores, by default)")
    args = parser.parse_args()
    uvicorn.run(build_app(args.threads), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
