"""Every environment variable the service reads, parsed and validated in one place.

Each replica process calls :func:`get_settings` once; a bad value raises :class:`SettingsError`
naming the variable and the value, so a misconfigured deployment fails at start-up instead of
running on a silent default.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TRUE_WORDS = frozenset({"true", "1", "yes"})
_FALSE_WORDS = frozenset({"false", "0", "no"})


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def parse_bool(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise SettingsError(
        f"{name}={raw!r} is not a boolean; use one of true/1/yes or false/0/no"
    )


def _int_parser(minimum: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not an integer") from None
        if value < minimum:
            raise SettingsError(f"{name}={raw!r} must be an integer >= {minimum}")
        return value

    return parse


def _float_parser(minimum_exclusive: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number") from None
        if not (value > minimum_exclusive and math.isfinite(value)):
            raise SettingsError(f"{name}={raw!r} must be a finite number > {minimum_exclusive}")
        return value

    return parse


def _choice_parser(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip()
        if value not in choices:
            raise SettingsError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
        return value

    return parse


def _optional_text(name: str, raw: str) -> str | None:
    return raw.strip() or None


def _optional_float(name: str, raw: str) -> float | None:
    return _float_parser(0.0)(name, raw) if raw.strip() else None


def _optional_int(name: str, raw: str) -> int | None:
    return _int_parser(1)(name, raw) if raw.strip() else None


def _path(name: str, raw: str) -> Path:
    if not raw.strip():
        raise SettingsError(f"{name} is empty; give a directory path")
    return Path(raw.strip()).expanduser()


@dataclass(frozen=True)
class _Var:
    """How one environment variable maps to a settings field."""

    env: str
    default: str
    parse: Callable[[str, str], Any]
    doc: str


# Field name -> variable. The README's configuration table is this list.
ENVIRONMENT: dict[str, _Var] = {
    "max_upload_bytes": _Var(
        "MAX_UPLOAD_BYTES", str(10 * 1024 * 1024), _int_parser(1),
        "Largest accepted request body, in bytes; larger bodies get 413.",
    ),
    "max_image_pixels": _Var(
        "MAX_IMAGE_PIXELS", "40000000", _int_parser(1),
        "Largest accepted width x height; larger images get 422 before their pixels are decoded.",
    ),
    "max_image_side": _Var(
        "MAX_IMAGE_SIDE", "16384", _int_parser(1),
        "Longest accepted image side, in pixels; longer gets 422.",
    ),
    "max_batch_images": _Var(
        "MAX_BATCH_IMAGES", "8", _int_parser(1),
        "Most images in one Open Inference Protocol (v2) infer request; more gets 400.",
    ),
    "decode_timeout_s": _Var(
        "DECODE_TIMEOUT_S", "5", _float_parser(0.0),
        "Wall-clock budget for decoding one image; past it the request gets 422 decode_timeout.",
    ),
    "enable_model_cache": _Var(
        "ENABLE_MODEL_CACHE", "true", parse_bool,
        "Per-replica LRU cache of predictions: true/1/yes or false/0/no (any case).",
    ),
    "model_cache_size": _Var(
        "MODEL_CACHE_SIZE", "128", _int_parser(0),
        "Cache entries per model replica; 0 keeps nothing.",
    ),
    "model_name": _Var(
        "MODEL_NAME", "efficientnet-lite0", _choice_parser(("efficientnet-lite0", "torchscript")),
        "Which model spec to serve: the built-in efficientnet-lite0, or torchscript (below).",
    ),
    "torchscript_path": _Var(
        "TORCHSCRIPT_MODEL_PATH", "", _optional_text,
        "MODEL_NAME=torchscript: path of the TorchScript classifier file.",
    ),
    "torchscript_labels_path": _Var(
        "TORCHSCRIPT_LABELS_PATH", "", _optional_text,
        "MODEL_NAME=torchscript: text file with one class label per line.",
    ),
    "torchscript_input_size": _Var(
        "TORCHSCRIPT_INPUT_SIZE", "224", _int_parser(1),
        "MODEL_NAME=torchscript: square input side the model expects.",
    ),
    "model_device": _Var(
        "MODEL_DEVICE", "cpu", _choice_parser(("cpu", "cuda")),
        "Where each model replica runs its forward pass; cuda needs a GPU build of torch.",
    ),
    "model_runtime": _Var(
        "MODEL_RUNTIME", "auto", _choice_parser(("auto", "openvino", "torch")),
        "What runs the forward pass: openvino (compiled from the torch weights at start-up), torch "
        "(eager), or auto: openvino on cpu, torch on cuda.",
    ),
    "model_precision": _Var(
        "MODEL_PRECISION", "f32", _choice_parser(("f32", "bf16")),
        "f32, or bf16 (openvino only, opt-in: faster on CPUs with bf16 units, answers move; "
        "see docs/performance.md).",
    ),
    "compiled_model_dir": _Var(
        "COMPILED_MODEL_DIR", "~/.cache/image-classification-service/compiled-models", _path,
        "Where converted models are kept, keyed by the weights' hash, so later starts skip the conversion.",
    ),
    "model_num_threads": _Var(
        "MODEL_NUM_THREADS", "1", _int_parser(1),
        "Threads for each model replica's forward pass.",
    ),
    "model_max_batch_size": _Var(
        "MODEL_MAX_BATCH_SIZE", "1", _int_parser(1),
        "Most concurrent requests one forward pass takes together (Serve's @serve.batch); 1 runs each "
        "alone. Meant for GPUs, where 16 images cost about what one does; measured in "
        "docs/performance.md. Give Inference's max_ongoing_requests more than this (twice, say): the "
        "requests of the batch in flight hold their slots.",
    ),
    "model_batch_wait_ms": _Var(
        "MODEL_BATCH_WAIT_MS", "5", _int_parser(0),
        "With MODEL_MAX_BATCH_SIZE above 1: how long a batch waits for more requests to join. Serve "
        "closes a batch when its wait ends, even while the one before still runs, so a wait shorter "
        "than a forward pass gives small batches.",
    ),
    "sentry_dsn": _Var(
        "SENTRY_DSN", "", _optional_text,
        "Report unexpected errors (never 4xx) to this Sentry DSN; unset sends nothing.",
    ),
    "sentry_environment": _Var(
        "SENTRY_ENVIRONMENT", "production", _optional_text,
        "Environment name attached to Sentry events.",
    ),
    "api_keys_file": _Var(
        "API_KEYS_FILE", "", _optional_text,
        "File of '<key_id>:<sha256 of key>' lines; set, every route but health needs 'Authorization: Bearer "
        "<key>'. Unset, the service is open.",
    ),
    "rate_limit_rps": _Var(
        "RATE_LIMIT_RPS", "", _optional_float,
        "Requests per second per API key, per ingress replica (token bucket); unset means no limit.",
    ),
    "rate_limit_burst": _Var(
        "RATE_LIMIT_BURST", "", _optional_int,
        "Requests a key may send at once above the rate; unset, RATE_LIMIT_RPS rounded up (at least 1).",
    ),
    "readiness_timeout_s": _Var(
        "READINESS_TIMEOUT_S", "5", _float_parser(0.0),
        "How long GET /readyz waits for each deployment before answering 503.",
    ),
}


@dataclass(frozen=True)
class Settings:
    max_upload_bytes: int
    max_image_pixels: int
    max_image_side: int
    max_batch_images: int
    decode_timeout_s: float
    enable_model_cache: bool
    model_cache_size: int
    model_name: str
    torchscript_path: str | None
    torchscript_labels_path: str | None
    torchscript_input_size: int
    model_device: str
    model_runtime: str
    model_precision: str
    compiled_model_dir: Path
    model_num_threads: int
    model_max_batch_size: int
    model_batch_wait_ms: int
    sentry_dsn: str | None
    sentry_environment: str | None
    api_keys_file: str | None
    rate_limit_rps: float | None
    rate_limit_burst: int | None
    readiness_timeout_s: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values = {
            field: var.parse(var.env, environ.get(var.env, var.default))
            for field, var in ENVIRONMENT.items()
        }
        settings = cls(**values)
        settings._check_model_choice()
        settings._check_runtime_choice()
        settings._check_rate_limit()
        return settings

    def _check_rate_limit(self) -> None:
        if self.rate_limit_burst is not None and self.rate_limit_rps is None:
            raise SettingsError("RATE_LIMIT_BURST is set but RATE_LIMIT_RPS is not; set both, or neither")

    def _check_model_choice(self) -> None:
        if self.model_name == "torchscript":
            for field in ("torchscript_path", "torchscript_labels_path"):
                if getattr(self, field) is None:
                    env = ENVIRONMENT[field].env
                    raise SettingsError(f"{env} must be set when MODEL_NAME=torchscript")


    @property
    def runtime(self) -> str:
        """The runtime in force: ``auto`` resolved for the device."""
        if self.model_runtime == "auto":
            return "torch" if self.model_device == "cuda" else "openvino"
        return self.model_runtime

    def _check_runtime_choice(self) -> None:
        if self.model_device == "cuda" and self.runtime != "torch":
            raise SettingsError("MODEL_RUNTIME=openvino runs on the CPU; with MODEL_DEVICE=cuda use torch or auto")
        if self.model_precision == "bf16" and self.runtime != "openvino":
            raise SettingsError(f"MODEL_PRECISION=bf16 needs the openvino runtime, not {self.runtime}")


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env()


def main() -> int:
    """``python -m common.settings``: print the effective settings, or why they are invalid."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    for field, var in ENVIRONMENT.items():
        source = "env" if var.env in os.environ else "default"
        print(f"{var.env:<24} {getattr(settings, field)!s:<20} ({source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
