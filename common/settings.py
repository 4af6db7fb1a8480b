"""Every environment variable the service reads, parsed and validated in one place.

Each replica process calls :func:`get_settings` once; a bad value raises :class:`SettingsError`
naming the variable and the value, so a misconfigured deployment fails at start-up instead of
running on a silent default.
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
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


# MODEL_RUNTIME's other form: ``package.module:Factory`` with optional ``?name=number&...``
# arguments, imported only when the model loads (the simulated model of the batching benchmarks).
RUNTIME_IMPORT_PATH = re.compile(r"[\w.]+:\w+(\?\w+=[0-9.]+(&\w+=[0-9.]+)*)?")
# MODEL_RUNTIME's and MODEL_PRECISION's choices, which each model repository entry takes too.
RUNTIMES = ("auto", "openvino", "torch")
PRECISIONS = ("f32", "bf16")


def _runtime_parser(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    """One of ``choices``, or an import path (``RUNTIME_IMPORT_PATH``)."""
    def parse(name: str, raw: str) -> str:
        value = raw.strip()
        if value not in choices and not RUNTIME_IMPORT_PATH.fullmatch(value):
            raise SettingsError(f"{name}={raw!r} must be one of: {', '.join(choices)}, or an import "
                                "path package.module:Factory[?name=number&...]")
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
class Variable:
    """One environment variable: its name, its default, how it is parsed, and what it means.

    ``doc`` is Markdown: it is the README's configuration table, word for word
    (``python -m common.settings --markdown`` prints the table; a unit test compares the two).
    """

    env: str
    default: str
    parse: Callable[[str, str], Any]
    doc: str


def _variable(env: str, default: str, parse: Callable[[str, str], Any], doc: str) -> Any:
    """A settings field read from ``env``; the field's name and type are declared beside it."""
    return field(metadata={"variable": Variable(env, default, parse, doc)})


@dataclass(frozen=True)
class Settings:
    """Every setting, in the order of the README's configuration table."""

    max_upload_bytes: int = _variable(
        "MAX_UPLOAD_BYTES", str(10 * 1024 * 1024), _int_parser(1),
        "Largest accepted request body, in bytes; larger bodies get 413.",
    )
    max_image_pixels: int = _variable(
        "MAX_IMAGE_PIXELS", "40000000", _int_parser(1),
        "Largest accepted width × height; larger images get 422 before their pixels are decoded.",
    )
    max_image_side: int = _variable(
        "MAX_IMAGE_SIDE", "16384", _int_parser(1),
        "Longest accepted image side, in pixels; longer gets 422.",
    )
    max_batch_images: int = _variable(
        "MAX_BATCH_IMAGES", "8", _int_parser(1),
        "Most images in one Open Inference Protocol (v2) infer request; more gets 400.",
    )
    decode_timeout_s: float = _variable(
        "DECODE_TIMEOUT_S", "5", _float_parser(0.0),
        "Wall-clock budget for decoding one image; past it the request gets 422 `decode_timeout`.",
    )
    enable_model_cache: bool = _variable(
        "ENABLE_MODEL_CACHE", "true", parse_bool,
        "Per-replica LRU cache of predictions: `true`/`1`/`yes` or `false`/`0`/`no`, any case.",
    )
    model_cache_size: int = _variable(
        "MODEL_CACHE_SIZE", "128", _int_parser(0),
        "Cache entries per model replica; `0` keeps nothing.",
    )
    model_name: str = _variable(
        "MODEL_NAME", "efficientnet-lite0",
        _choice_parser(("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "torchscript")),
        "The model when the application args name no `models` repository: `efficientnet-lite0/1/2`, "
        "or `torchscript` (the next three variables; \"Serving your own model\").",
    )
    torchscript_path: str | None = _variable(
        "TORCHSCRIPT_MODEL_PATH", "", _optional_text,
        "`MODEL_NAME=torchscript`: path of the TorchScript classifier file.",
    )
    torchscript_labels_path: str | None = _variable(
        "TORCHSCRIPT_LABELS_PATH", "", _optional_text,
        "`MODEL_NAME=torchscript`: text file with one class label per line.",
    )
    torchscript_input_size: int = _variable(
        "TORCHSCRIPT_INPUT_SIZE", "224", _int_parser(1),
        "`MODEL_NAME=torchscript`: square input side the model expects.",
    )
    model_device: str = _variable(
        "MODEL_DEVICE", "cpu", _choice_parser(("cpu", "cuda")),
        "Where the forward pass runs; `cuda` needs the CUDA build of torch.",
    )
    model_runtime: str = _variable(
        "MODEL_RUNTIME", "auto", _runtime_parser(RUNTIMES),
        "`openvino` (converted from the torch weights at start-up; about 4× torch's speed on a CPU, "
        "docs/performance.md), `torch` (eager), `auto` (`openvino` on `cpu`, `torch` on `cuda`, resolved "
        "by each replica for its own `MODEL_DEVICE`), or an import path (docs/performance.md, \"Batching\").",
    )
    model_precision: str = _variable(
        "MODEL_PRECISION", "f32", _choice_parser(PRECISIONS),
        "`f32`, or `bf16` (`openvino` only): faster on CPUs with bf16 units; top-1 changes on about 1 "
        "image in 15.",
    )
    compiled_model_dir: Path = _variable(
        "COMPILED_MODEL_DIR", "~/.cache/image-classification-service/compiled-models", _path,
        "Where the converted model is kept, keyed by the weights' hash and the converter's version; "
        "later starts load it instead of converting again (the start-up log gives each conversion's time).",
    )
    model_num_threads: int = _variable(
        "MODEL_NUM_THREADS", "1", _int_parser(1),
        "Threads for each model replica's forward pass.",
    )
    model_max_batch_size: int = _variable(
        "MODEL_MAX_BATCH_SIZE", "1", _int_parser(1),
        "Most requests one forward pass takes together (Serve's `@serve.batch`); `1` runs each alone. "
        "Meant for GPUs (docs/performance.md, \"Batching\"); give Inference's `max_ongoing_requests` "
        "twice this.",
    )
    model_batch_wait_ms: int = _variable(
        "MODEL_BATCH_WAIT_MS", "30", _int_parser(0),
        "With `MODEL_MAX_BATCH_SIZE` above 1: how long a batch waits for more requests (during a "
        "pass, until its end); behind a 30 ms model, 30 ms fills batches of about 5 (docs/performance.md).",
    )
    sentry_dsn: str | None = _variable(
        "SENTRY_DSN", "", _optional_text,
        "Report unexpected errors (never 4xx) to this Sentry DSN; unset sends nothing.",
    )
    sentry_environment: str | None = _variable(
        "SENTRY_ENVIRONMENT", "production", _optional_text,
        "Environment name attached to Sentry events.",
    )
    api_keys_file: str | None = _variable(
        "API_KEYS_FILE", "", _optional_text,
        "File of `<key_id>:<sha256 of the key>` lines. Set, every route but the four health routes "
        "needs `Authorization: Bearer <key>` (see Security); unset, the service is open.",
    )
    rate_limit_rps: float | None = _variable(
        "RATE_LIMIT_RPS", "", _optional_float,
        "Requests per second per API key, per ingress replica (token bucket); unset means no limit.",
    )
    rate_limit_burst: int | None = _variable(
        "RATE_LIMIT_BURST", "", _optional_int,
        "Requests a key may send at once above the rate; unset, `RATE_LIMIT_RPS` rounded up (at "
        "least 1).",
    )
    readiness_timeout_s: float = _variable(
        "READINESS_TIMEOUT_S", "5", _float_parser(0.0),
        "How long `GET /readyz` waits for each deployment before answering 503.",
    )
    stalled_call_retry_s: float = _variable(
        "STALLED_CALL_RETRY_S", "20", _float_parser(0.0),
        "How long the ingress waits for a stage's answer before it cancels the call and sends it once "
        "more: a rare call to a replica that just died is never answered (docs/resilience.md). Keep it "
        "above a wedged model's replacement (about 16 s) and below `request_timeout_s` (30 s).",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values = {
            name: var.parse(var.env, environ.get(var.env, var.default))
            for name, var in ENVIRONMENT.items()
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
            for name in ("torchscript_path", "torchscript_labels_path"):
                if getattr(self, name) is None:
                    raise SettingsError(f"{ENVIRONMENT[name].env} must be set when MODEL_NAME=torchscript")

    def _check_runtime_choice(self) -> None:
        try:
            resolve_runtime(self.model_runtime, self.model_precision, self.model_device)
        except ValueError as exc:
            raise SettingsError(f"MODEL_RUNTIME={self.model_runtime}, MODEL_PRECISION={self.model_precision}: "
                                f"{exc}") from None


def resolve_runtime(runtime: str, precision: str, device: str) -> str:
    """``runtime`` (auto, openvino, torch or an import path) with ``auto`` resolved for the device;
    ValueError for a combination that cannot run. For MODEL_RUNTIME and for each model repository entry."""
    resolved = ("torch" if device == "cuda" else "openvino") if runtime == "auto" else runtime
    if device == "cuda" and resolved == "openvino":
        raise ValueError("openvino runs on the CPU; with MODEL_DEVICE=cuda use torch or auto")
    if precision == "bf16" and resolved != "openvino":
        raise ValueError(f"bf16 needs the openvino runtime, not {resolved}")
    return resolved


# Field name -> its variable, in declaration order: read off the fields, never declared apart.
ENVIRONMENT: dict[str, Variable] = {f.name: f.metadata["variable"] for f in fields(Settings)}


def markdown_table() -> str:
    """The README's configuration table: every variable, its default and its doc."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for var in ENVIRONMENT.values():
        default = f"`{var.default}`" if var.default else ""
        rows.append(f"| `{var.env}` | {default} | {var.doc} |")
    return "\n".join(rows)


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env()


def main(argv: list[str]) -> int:
    """``python -m common.settings``: print the effective settings, or why they are invalid.

    ``--markdown`` prints the README's configuration table instead.
    """
    if argv == ["--markdown"]:
        print(markdown_table())
        return 0
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    for name, var in ENVIRONMENT.items():
        source = "env" if var.env in os.environ else "default"
        print(f"{var.env:<24} {getattr(settings, name)!s:<20} ({source})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
