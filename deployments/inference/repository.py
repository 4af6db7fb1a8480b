"""The model repository: the models one graph serves, from ``serve_config.yaml``'s application args.

    args:
      models:
        - {name: efficientnet-lite0, source: efficientnet-lite0, default: true}
        - {name: mine, source: torchscript, path: /m/mine.pt, labels: /m/labels.txt, input_size: 224,
           runtime: torch, precision: f32, cache_size: 512}

Each entry becomes an Inference deployment of its own (``serve_app/app.py``): the default model's is
named ``Inference``, every other ``Inference-<name>``; its replica bounds and CPUs are that
deployment's entry in the config's ``deployments`` list, as for any deployment. ``runtime``,
``precision`` and ``cache_size`` default to ``MODEL_RUNTIME``, ``MODEL_PRECISION`` and
``MODEL_CACHE_SIZE``; each replica resolves ``runtime: auto`` for its own ``MODEL_DEVICE``, which
its deployment's ``runtime_env`` may set (serve_config.gpu.yaml). Without ``models`` the repository
is the one model ``MODEL_NAME`` names.
Parsing is plain Python, so a bad entry fails ``build_app`` before any replica starts, with a
message naming the entry and the field; a runtime that cannot run on a replica's own
``MODEL_DEVICE`` (``openvino`` on ``cuda``) fails that replica's start, naming the model and device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from common.settings import PRECISIONS, RUNTIME_IMPORT_PATH, RUNTIMES, Settings, SettingsError, resolve_runtime
from deployments.inference.spec import PACKAGED_MODELS, ModelSource, source_from_settings

DEFAULT_DEPLOYMENT = "Inference"
# A name is a path segment of /v2/models/{name} and part of a deployment's name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FIELDS = {"name", "source", "default", "path", "labels", "input_size", "runtime", "precision", "cache_size"}
_TORCHSCRIPT_FIELDS = {"path", "labels", "input_size"}


class RepositoryError(SettingsError):
    """A model repository entry is invalid; the message names the entry and the field."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    source: ModelSource
    runtime: str  # as configured: auto, openvino, torch or an import path
    precision: str
    cache_size: int
    deployment: str  # the name of its Inference deployment

    def runtime_on(self, device: str) -> str:
        """The runtime this model runs on ``device``, its replica's ``MODEL_DEVICE``: resolved there,
        not where the graph is built, whose environment lacks what the deployment's runtime_env sets."""
        try:
            return resolve_runtime(self.runtime, self.precision, device)
        except ValueError as exc:
            raise RepositoryError(f"model {self.name!r} on MODEL_DEVICE={device}: {exc}") from None


def entry_from_settings(settings: Settings) -> ModelEntry:
    """The repository of one: the model that ``MODEL_NAME`` names."""
    source = source_from_settings(settings)
    return ModelEntry(source.default_name, source, settings.model_runtime, settings.model_precision,
                      settings.model_cache_size, DEFAULT_DEPLOYMENT)


def model_repository(args: dict, settings: Settings) -> tuple[ModelEntry, ...]:
    """The served models, the default first."""
    raw = args.get("models")
    if raw is None:
        return (entry_from_settings(settings),)
    if not isinstance(raw, list) or not raw:
        raise RepositoryError("model repository: 'models' must be a non-empty list of entries")
    parsed = [_parse_entry(i, item, settings) for i, item in enumerate(raw, start=1)]
    defaults = [i for i, (_, is_default) in enumerate(parsed) if is_default]
    if len(parsed) > 1 and len(defaults) != 1:
        raise RepositoryError(f"model repository: exactly one entry must set field 'default: true'; "
                              f"{len(defaults)} do")
    names = [entry.name for entry, _ in parsed]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise RepositoryError(f"model repository entry {i + 1} ({name!r}), field 'name': used by an earlier entry")
    first = defaults[0] if defaults else 0
    ordered = [parsed[first][0]] + [entry for i, (entry, _) in enumerate(parsed) if i != first]
    return tuple(
        ModelEntry(e.name, e.source, e.runtime, e.precision, e.cache_size,
                   DEFAULT_DEPLOYMENT if i == 0 else f"{DEFAULT_DEPLOYMENT}-{e.name}")
        for i, e in enumerate(ordered)
    )


def _parse_entry(index: int, item: object, settings: Settings) -> tuple[ModelEntry, bool]:
    label = f"model repository entry {index}"
    if not isinstance(item, dict):
        raise RepositoryError(f"{label}: must be a mapping of fields, not {type(item).__name__}")
    if isinstance(item.get("name"), str):
        label += f" ({item['name']!r})"

    def fail(field: str, problem: str) -> RepositoryError:
        return RepositoryError(f"{label}, field {field!r}: {problem}")

    unknown = sorted(set(item) - _FIELDS, key=str)
    if unknown:
        raise fail(str(unknown[0]), f"unknown field; the fields are {', '.join(sorted(_FIELDS))}")
    kind = item.get("source")
    if kind not in (*PACKAGED_MODELS, "torchscript"):
        raise fail("source", f"must be one of {', '.join((*PACKAGED_MODELS, 'torchscript'))}, not {kind!r}")
    if kind == "torchscript":
        source = _torchscript_source(item, fail)
    else:
        extra = sorted(_TORCHSCRIPT_FIELDS & set(item))
        if extra:
            raise fail(extra[0], "only a torchscript source takes it")
        source = ModelSource(kind)
    name = item.get("name", source.default_name)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise fail("name", f"must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit; "
                           f"not {name!r}")
    is_default = item.get("default", False)
    if not isinstance(is_default, bool):
        raise fail("default", f"must be true or false, not {is_default!r}")
    runtime = item.get("runtime", settings.model_runtime)
    if runtime not in RUNTIMES and not (isinstance(runtime, str) and RUNTIME_IMPORT_PATH.fullmatch(runtime)):
        raise fail("runtime", f"must be one of {', '.join(RUNTIMES)} or an import path, not {runtime!r}")
    precision = item.get("precision", settings.model_precision)
    if precision not in PRECISIONS:
        raise fail("precision", f"must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    try:  # for the build's MODEL_DEVICE, the replicas' unless their runtime_env sets another
        resolve_runtime(runtime, precision, settings.model_device)
    except ValueError as exc:
        raise fail("runtime", str(exc)) from None
    cache_size = item.get("cache_size", settings.model_cache_size)
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
        raise fail("cache_size", f"must be an integer >= 0, not {cache_size!r}")
    return ModelEntry(name, source, runtime, precision, cache_size, DEFAULT_DEPLOYMENT), is_default


def _torchscript_source(item: dict, fail) -> ModelSource:
    paths = {}
    for field in ("path", "labels"):
        value = item.get(field)
        if not isinstance(value, str) or not Path(value).is_file():
            raise fail(field, f"must name a readable file; {value!r} is not one")
        paths[field] = Path(value)
    size = item.get("input_size")
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 4096:
        raise fail("input_size", f"must be the model's square input side, 16 to 4096 pixels; not {size!r}")
    return ModelSource("torchscript", paths["path"], paths["labels"], size)
