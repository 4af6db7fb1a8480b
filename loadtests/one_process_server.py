"""The baseline the graph replaces: one process that validates, decodes and classifies in its
request handler, as the old single-process backend did and as a user would write it.

    python -m loadtests.one_process_server --port 8100 [--torch-threads 2]

Same validator, decoder and model as the graph; no cache; served by uvicorn with one worker.
Only for the benchmark (`python -m loadtests.bench`), which starts and stops it.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from common.errors import ServiceError
from common.settings import Settings
from deployments.inference.spec import model_spec_from_settings
from deployments.preprocessing import ImageDecoder
from deployments.validation import ImageValidator
from serve_app.http_errors import error_response


def build_app(torch_threads: int) -> Starlette:
    settings = Settings.from_env({})
    torch.set_num_threads(torch_threads)
    spec = model_spec_from_settings(settings)
    model = spec.load()
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    validator = ImageValidator.from_settings(settings)
    decoder = ImageDecoder(spec.geometry, settings.max_image_pixels, settings.max_image_side)

    async def classify(request: Request) -> JSONResponse:
        data = await request.body()
        try:
            validated = validator.validate(data)
            decoded = decoder.decode(data, validated.format)
        except ServiceError as error:
            return error_response(error, request_id="")
        batch = torch.from_numpy(np.array(decoded.pixels)[np.newaxis]).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            scores, ids = torch.softmax(model((batch - mean) / std), dim=1).topk(5)
        return JSONResponse({
            "image": {"format": validated.format, "width": decoded.width, "height": decoded.height},
            "predictions": [
                {"class_id": int(i), "label": spec.labels[int(i)], "score": float(s)}
                for i, s in zip(ids[0], scores[0])
            ],
            "cached": False,
        })

    return Starlette(routes=[Route("/v1/classify", classify, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--torch-threads", type=int, default=2)
    args = parser.parse_args()
    uvicorn.run(build_app(args.torch_threads), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
