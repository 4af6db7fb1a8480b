"""The model repository of serve_config.yaml's application args: what it serves, and a bad entry
failing the build with a message that names the entry and the field."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from common.errors import NotFound, Unavailable
from common.settings import Settings, SettingsError, get_settings
from deployments.inference.deployment import Inference
from deployments.inference.repository import model_repository
from deployments.inference.spec import ModelSource, geometry_of
from serve_app.app import build_app
from serve_app.data_plane import DataPlane, ServedModel

ROOT = Path(__file__).resolve().parents[2]
LITE = [{"name": f"efficientnet-lite{i}", "source": f"efficientnet-lite{i}"} for i in range(3)]


def repository(models, **env):
    return model_repository({"models": models}, Settings.from_env(env))


def test_the_shipped_repository_serves_lite0_by_default_then_lite1_and_lite2():
    (app,) = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"]
    entries = model_repository(app["args"], Settings.from_env({}))
    assert [(e.name, e.deployment) for e in entries] == [
        ("efficientnet-lite0", "Inference"), ("efficientnet-lite1", "Inference-efficientnet-lite1"),
        ("efficientnet-lite2", "Inference-efficientnet-lite2"),
    ]
    assert {d["name"] for d in app["deployments"]} >= {e.deployment for e in entries}, \
        "each model's deployment has its replica bounds and CPUs in the config"
    assert [geometry_of(e.source).size for e in entries] == [224, 240, 260]
    build_app(app["args"])


def test_without_models_the_repository_is_the_one_model_named_by_model_name():
    (entry,) = model_repository({}, Settings.from_env({"MODEL_NAME": "efficientnet-lite2", "MODEL_CACHE_SIZE": "7"}))
    assert (entry.name, entry.source, entry.cache_size, entry.deployment, entry.runtime_on("cpu")) == (
        "efficientnet-lite2", ModelSource("efficientnet-lite2"), 7, "Inference", "openvino")


def test_an_entry_overrides_the_runtime_precision_and_cache_size_and_the_default_goes_first():
    entries = repository([LITE[0], {**LITE[1], "default": True, "runtime": "torch", "cache_size": 3}],
                         MODEL_CACHE_SIZE="9")
    assert [(e.name, e.runtime_on("cpu"), e.cache_size) for e in entries] == [
        ("efficientnet-lite1", "torch", 3), ("efficientnet-lite0", "openvino", 9)]


def test_each_replica_resolves_the_runtime_for_its_own_device_not_the_builds(monkeypatch):
    auto, openvino = repository([{**LITE[0], "default": True}, {**LITE[1], "runtime": "openvino"}])
    assert (auto.runtime_on("cpu"), auto.runtime_on("cuda")) == ("openvino", "torch")
    with pytest.raises(SettingsError, match="model 'efficientnet-lite1' on MODEL_DEVICE=cuda: openvino runs on the CPU"):
        openvino.runtime_on("cuda")
    # A replica whose runtime_env sets MODEL_DEVICE=cuda: it refuses before loading anything.
    monkeypatch.setenv("MODEL_DEVICE", "cuda")
    get_settings.cache_clear()  # a replica reads its environment once, at its start
    try:
        with pytest.raises(SettingsError, match="model 'efficientnet-lite1' on MODEL_DEVICE=cuda"):
            Inference.func_or_class(openvino)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_a_simulated_runtime_named_by_model_runtime_serves_every_entry_of_a_repository():
    simulated = "deployments.inference.simulated:SimulatedRuntime?batch_ms=30"
    entries = repository([{**LITE[0], "default": True}, LITE[1]], MODEL_RUNTIME=simulated)
    assert [e.runtime for e in entries] == [simulated, simulated]


def test_a_torchscript_entry_takes_its_file_labels_and_input_size(tmp_path):
    model, labels = tmp_path / "mine.pt", tmp_path / "labels.txt"
    model.write_bytes(b"x")
    labels.write_text("a\nb\n")
    (entry,) = repository([{"source": "torchscript", "path": str(model), "labels": str(labels), "input_size": 192}])
    assert entry.name == "mine" and geometry_of(entry.source).size == 192


@pytest.mark.parametrize(("models", "names"), [
    ([{**LITE[0], "source": "efficientnet-lite9"}], "entry 1 ('efficientnet-lite0'), field 'source'"),
    ([LITE[0], {**LITE[1], "cache_size": -1}], "entry 2 ('efficientnet-lite1'), field 'cache_size'"),
    ([LITE[0], {**LITE[1], "cache_size": "big"}], "field 'cache_size'"),
    ([{**LITE[0], "precision": "fp8"}], "field 'precision'"),
    ([{**LITE[0], "runtime": "tensorrt"}], "field 'runtime': must be one of auto, openvino, torch or an import path"),
    ([{**LITE[0], "runtime": "torch", "precision": "bf16"}], "field 'runtime': bf16 needs the openvino"),
    ([{**LITE[0], "replicas": 2}], "field 'replicas': unknown field"),
    ([{**LITE[0], "name": "a/b"}], "field 'name'"),
    ([{**LITE[0], "input_size": 300}], "field 'input_size': only a torchscript source"),
    ([{"name": "mine", "source": "torchscript", "path": "/nope.pt"}], "entry 1 ('mine'), field 'path'"),
    ([LITE[0], LITE[1]], "field 'default: true'; 0 do"),
    ([{**LITE[0], "default": True}, {**LITE[1], "default": True}], "2 do"),
    ([{**LITE[0], "default": "yes"}], "field 'default'"),
    ([LITE[0], {**LITE[1], "name": "efficientnet-lite0", "default": True}],
     "entry 2 ('efficientnet-lite0'), field 'name'"),
    ([], "non-empty list"),
    (["efficientnet-lite0"], "entry 1: must be a mapping"),
])
def test_a_bad_entry_fails_the_build_naming_the_entry_and_the_field(models, names):
    with pytest.raises(SettingsError, match="model repository") as raised:
        build_app({"models": models})
    assert names in str(raised.value)


class Handle:
    """A stand-in for one model's DeploymentHandle: ``describe`` answers, or never does."""

    def __init__(self, name: str | None) -> None:
        self.describe = self
        self._name = name

    def remote(self):
        async def describe():
            if self._name is None:
                await asyncio.sleep(60)
            return {"name": self._name}
        return describe()


def plane(**more: str | None) -> DataPlane:
    return DataPlane(None, None, Handle("lite0"), default_model="lite0", cache_enabled=True, cache_answers=None,
                     readiness_timeout_s=0.1, stalled_call_retry_s=20, more_models={name: ServedModel(Handle(answer), None) for name, answer in more.items()})


def test_a_model_is_found_by_name_the_default_too_and_an_unknown_name_lists_the_served_ones():
    served = plane(lite1="lite1")
    assert asyncio.run(served.model_named("lite1", "r")) == {"name": "lite1"}
    assert asyncio.run(served.model_named("lite0", "r")) == {"name": "lite0"}
    assert asyncio.run(served.model_named(None, "r")) == {"name": "lite0"}
    with pytest.raises(NotFound, match="unknown model 'lite9'; this server serves 'lite0', 'lite1'"):
        asyncio.run(served.model_named("lite9", "r"))


def test_a_model_still_loading_is_unavailable_not_unknown():
    with pytest.raises(Unavailable, match="model 'lite2' is still loading"):
        asyncio.run(plane(lite2=None).model_named("lite2", "r"))
