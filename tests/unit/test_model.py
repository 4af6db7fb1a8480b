import asyncio
import contextlib
import dataclasses
import hashlib
import io
import threading
import time

import numpy as np
import pytest
import torch

from common.contracts import InputGeometry
from common.errors import InvalidParameter
from common.settings import Settings, SettingsError
from deployments.inference.cache import PredictionCache
from deployments.inference.classifier import ImageClassifier
from deployments.inference.efficientnet_lite import load_efficientnet_lite
from deployments.inference.repository import entry_from_settings
from deployments.inference.runner import ModelRunner
from deployments.inference.runtimes import TorchRuntime, load_runtime
from deployments.inference.spec import (
    PACKAGED_MODELS,
    ModelSource,
    ModelSpec,
    geometry_of,
    model_spec_from_settings,
    packaged_weights,
)
from deployments.preprocessing import ImageDecoder
from deployments.validation import ImageValidator
from tests.images import PHOTO_PLAUSIBLE_LABELS, photo_bytes, shipped_photos


@pytest.fixture(scope="module")
def lite0_spec() -> ModelSpec:
    return model_spec_from_settings(Settings.from_env({}))


def on_torch(spec: ModelSpec) -> ModelRunner:
    return ModelRunner(spec, lambda: TorchRuntime(spec, "cpu", num_threads=1))


@pytest.fixture(scope="module")
def compiled_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("compiled-models")


@pytest.fixture(scope="module")
def classifier(lite0_spec, compiled_dir) -> ImageClassifier:
    """The classifier as served by default: OpenVINO, f32."""
    runner = ModelRunner(lite0_spec, lambda: load_runtime(lite0_spec, "openvino", "f32", "cpu", 1, compiled_dir))
    return ImageClassifier(runner, PredictionCache(16))


@pytest.mark.parametrize("variant", PACKAGED_MODELS)
def test_compact_model_matches_reference_implementation(variant):
    from efficientnet_lite_pytorch import EfficientNet

    weights = str(packaged_weights(variant))
    with contextlib.redirect_stdout(io.StringIO()):  # the reference prints while loading
        reference = EfficientNet.from_pretrained(variant, weights_path=weights).eval()
    compact = load_efficientnet_lite(variant, weights)
    torch.manual_seed(0)
    size = geometry_of(ModelSource(variant)).size
    batch = torch.randn(3, 3, size, size)
    with torch.inference_mode():
        expected, actual = reference(batch), compact(batch)
    assert actual.shape == (3, 1000)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_lite0_spec_describes_the_shipped_weights(lite0_spec):
    assert lite0_spec.name == "efficientnet-lite0"
    assert lite0_spec.num_classes == 1000
    assert lite0_spec.labels[285] == "Egyptian cat"
    assert lite0_spec.labels[0] == "tench"
    assert lite0_spec.geometry.size == 224
    assert lite0_spec.identity == f"efficientnet-lite0@{lite0_spec.version}"
    assert len(lite0_spec.version) == 12


def decode(data: bytes):
    return ImageDecoder(InputGeometry(224, 224 / 256), max_pixels=40_000_000, max_side=16384).decode(data, "jpeg")


def classify(classifier: ImageClassifier, data: bytes, top_k: int = 5):
    decoded = decode(data)
    sha256 = hashlib.sha256(data).hexdigest()
    return asyncio.run(classifier.classify(decoded, sha256, top_k))


def test_real_photo_gets_plausible_labels(classifier):
    prediction = classify(classifier, photo_bytes("JPEG"))
    labels = [c.label for c in prediction.classes]
    assert len(labels) == 5
    assert labels[0] in PHOTO_PLAUSIBLE_LABELS, labels
    assert len(PHOTO_PLAUSIBLE_LABELS.intersection(labels)) >= 3, labels


def test_classified_image_is_then_answered_from_cache_without_pixels(classifier):
    data = photo_bytes("JPEG", size=(320, 240))
    sha256 = hashlib.sha256(data).hexdigest()
    assert classifier.cached(sha256, 5) is None
    first = classify(classifier, data)
    hit = classifier.cached(sha256, 3)
    assert (first.cached, hit.cached) == (False, True)
    assert hit.classes == first.classes[:3]
    assert (hit.width, hit.height, hit.format) == (320, 240, "jpeg")
    assert classifier.cached(sha256, 10) is None  # stored for 5 classes: more is a miss


def test_top_k_beyond_the_class_count_is_refused(classifier):
    with pytest.raises(InvalidParameter, match="1000 classes"):
        classifier.cached("0" * 64, 1001)
    with pytest.raises(InvalidParameter, match="1000 classes"):
        classify(classifier, photo_bytes("JPEG", size=(64, 64)), top_k=1001)


def test_a_batch_answers_each_image_as_if_it_ran_alone(classifier):
    photos = dict(list(shipped_photos().items())[:4])
    decoder = ImageDecoder(InputGeometry(224, 224 / 256), 40_000_000, 16384)
    decoded = [decoder.decode(data, ImageValidator.validate_magic_bytes(data)[1]) for data in photos.values()]
    salt = b"batch"
    sha256s = [hashlib.sha256(salt + data).hexdigest() for data in photos.values()]
    top_ks = [1, 5, 3, 2]
    together = asyncio.run(classifier.classify_batch(decoded, sha256s, top_ks))
    alone = [asyncio.run(classifier.classify(d, "alone" + sha, k)) for d, sha, k in zip(decoded, sha256s, top_ks)]
    assert len({p.classes[0].class_id for p in alone}) > 1, "the photos must differ for this to prove anything"
    for batched, single, top_k in zip(together, alone, top_ks, strict=True):
        assert [c.class_id for c in batched.classes] == [c.class_id for c in single.classes]
        assert len(batched.classes) == top_k
        assert [c.score for c in batched.classes] == pytest.approx([c.score for c in single.classes], abs=1e-5)
        assert (batched.width, batched.height) == (single.width, single.height)
    assert all(classifier.cached(sha, 1) is not None for sha in sha256s), "every image of the batch is cached"
    with pytest.raises(InvalidParameter):
        asyncio.run(classifier.classify_batch(decoded[:2], sha256s[:2], [5, 1001]))


def test_all_classes_sorted_and_summing_to_one(classifier):
    prediction = classify(classifier, photo_bytes("JPEG", size=(200, 200)), top_k=1000)
    scores = [c.score for c in prediction.classes]
    assert len(scores) == 1000
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-3)
    assert sorted(c.class_id for c in prediction.classes) == list(range(1000))


class _ThreadRecordingModel(torch.nn.Module):
    """A tiny real model: mean colour -> 3 logits, remembering which threads ran it."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 3)
        self.threads: set[str] = set()

    def forward(self, x):
        self.threads.add(threading.current_thread().name)
        return self.linear(x.mean(dim=(2, 3)))


def test_runner_loads_and_runs_on_one_dedicated_thread():
    model = _ThreadRecordingModel()
    loaded_on = []

    def load():
        loaded_on.append(threading.current_thread().name)
        return model

    spec = ModelSpec("tiny", "1", InputGeometry(8, 1.0), (0, 0, 0), (1, 1, 1), ("a", "b", "c"), load)
    runner = on_torch(spec)

    async def many():
        batch = np.zeros((1, 8, 8, 3), dtype=np.uint8)
        return await asyncio.gather(*(runner.top_classes(batch, 3) for _ in range(8)))

    results = asyncio.run(many())
    assert len(results) == 8 and all(len(r[0].class_ids) == 3 for r in results)
    assert model.threads == set(loaded_on)
    assert loaded_on[0].startswith("model-runner")


class _GatedModel(_ThreadRecordingModel):
    """A model whose forward pass hangs while its gate is closed, like one stuck in a driver call."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.passes = 0

    def forward(self, x):
        self.gate.wait()
        self.passes += 1
        return super().forward(x)


def test_health_probe_fails_while_the_model_thread_is_wedged_without_hanging_the_check():
    model = _GatedModel()
    spec = ModelSpec("tiny", "1", InputGeometry(8, 1.0), (0, 0, 0), (1, 1, 1), ("a", "b", "c"), lambda: model)
    runner = on_torch(spec)
    asyncio.run(runner.probe(deadline_s=5))
    model.gate.clear()

    def check(deadline_s: float) -> None:
        # A check answers after wait_s: one that waited for a 600 s deadline would hit this bound.
        asyncio.run(asyncio.wait_for(runner.probe(deadline_s=deadline_s, wait_s=0.1), timeout=60))

    try:
        check(deadline_s=600)  # its pass is in flight, not yet past the deadline: no verdict yet
        time.sleep(0.5)
        for _ in range(2):  # every check once the pass in flight is older than the deadline fails
            with pytest.raises(RuntimeError, match=r"has not finished a forward pass in \d+ s \(deadline 0.5 s\)"):
                check(deadline_s=0.5)
    finally:
        model.gate.set()
    asyncio.run(runner.probe(deadline_s=5))  # unstuck, it answers again


def test_concurrent_health_probes_share_one_pass():
    """A readiness check and a health check may probe at once: both wait for the same pass."""
    model = _GatedModel()
    spec = ModelSpec("tiny", "1", InputGeometry(8, 1.0), (0, 0, 0), (1, 1, 1), ("a", "b", "c"), lambda: model)
    runner = on_torch(spec)
    passes_before = model.passes

    async def two_checks_while_a_pass_runs():
        model.gate.clear()
        threading.Timer(0.2, model.gate.set).start()
        await asyncio.gather(runner.probe(deadline_s=5), runner.probe(deadline_s=5))

    asyncio.run(two_checks_while_a_pass_runs())
    assert model.passes == passes_before + 1


def test_health_probe_reports_a_failing_forward_pass():
    model = _GatedModel()
    spec = ModelSpec("tiny", "1", InputGeometry(8, 1.0), (0, 0, 0), (1, 1, 1), ("a", "b", "c"), lambda: model)
    runner = on_torch(spec)
    model.forward = lambda x: (_ for _ in ()).throw(RuntimeError("driver error"))
    with pytest.raises(RuntimeError, match="driver error"):
        asyncio.run(runner.probe(deadline_s=5))


@pytest.mark.parametrize("runtime", ["openvino", "torch"])
def test_torchscript_model_is_served_by_configuration(tmp_path, runtime):
    model_path = tmp_path / "tiny-classifier.pt"
    labels_path = tmp_path / "labels.txt"
    labels_path.write_text("red\ngreen\nblue\n")

    class MeanColour(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3)) * 10

    torch.jit.script(MeanColour()).save(str(model_path))
    settings = Settings.from_env(
        {"MODEL_NAME": "torchscript", "TORCHSCRIPT_MODEL_PATH": str(model_path),
         "TORCHSCRIPT_LABELS_PATH": str(labels_path), "TORCHSCRIPT_INPUT_SIZE": "32"}
    )
    spec = model_spec_from_settings(settings)
    assert (spec.name, spec.labels, spec.geometry.size) == ("tiny-classifier", ("red", "green", "blue"), 32)
    runner = ModelRunner(spec, lambda: load_runtime(spec, runtime, "f32", "cpu", 1, tmp_path / "compiled"))
    blue = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    blue[..., 2] = 255
    (top,) = asyncio.run(runner.top_classes(blue, 2))
    assert spec.labels[top.class_ids[0]] == "blue"


def test_torchscript_missing_file_names_the_variable(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\n")
    settings = Settings.from_env(
        {"MODEL_NAME": "torchscript", "TORCHSCRIPT_MODEL_PATH": str(tmp_path / "nope.pt"),
         "TORCHSCRIPT_LABELS_PATH": str(labels)}
    )
    with pytest.raises(SettingsError, match="TORCHSCRIPT_MODEL_PATH"):
        model_spec_from_settings(settings)


def real_photos(geometry: InputGeometry) -> dict[str, np.ndarray]:
    """The photographs the installed packages ship, preprocessed as the service does."""
    decoder = ImageDecoder(geometry, max_pixels=40_000_000, max_side=16384)
    return {name: decoder.decode(data, "png" if name.endswith(".png") else "jpeg").pixels
            for name, data in shipped_photos().items()}


def test_default_runtime_keeps_parity_with_torch_eager(lite0_spec, compiled_dir):
    """The default runtime must give the same top-5 classes, and probabilities within 1e-3."""
    default = entry_from_settings(Settings.from_env({}))
    assert (default.runtime_on("cpu"), default.precision) == ("openvino", "f32")
    eager = TorchRuntime(lite0_spec, "cpu", num_threads=1)
    compiled = load_runtime(lite0_spec, "openvino", default.precision, "cpu", 1, compiled_dir)
    for name, pixels in real_photos(lite0_spec.geometry).items():
        expected, actual = eager.forward(pixels[np.newaxis])[0], compiled.forward(pixels[np.newaxis])[0]
        assert list(np.argsort(-actual)[:5]) == list(np.argsort(-expected)[:5]), name
        assert np.abs(actual - expected).max() <= 1e-3, name


def test_a_second_start_loads_the_converted_model_without_converting(lite0_spec, compiled_dir):
    load_runtime(lite0_spec, "openvino", "f32", "cpu", 1, compiled_dir)  # converted, or already there

    def must_not_be_called():
        raise AssertionError("the torch model was loaded again")

    warm = load_runtime(dataclasses.replace(lite0_spec, load=must_not_be_called), "openvino", "f32", "cpu", 1,
                        compiled_dir)
    assert warm.forward(np.zeros((1, 224, 224, 3), np.uint8)).shape == (1, 1000)


def test_new_weights_get_a_conversion_of_their_own(lite0_spec, compiled_dir):
    load_runtime(lite0_spec, "openvino", "f32", "cpu", 1, compiled_dir)
    other = dataclasses.replace(lite0_spec, version="000000000000")
    load_runtime(other, "openvino", "f32", "cpu", 1, compiled_dir)
    assert len(list(compiled_dir.glob("efficientnet-lite0-openvino-*"))) == 2
