"""The simulated model of the batching benchmarks, chosen by its import path in MODEL_RUNTIME."""

import asyncio
import threading
import time

import numpy as np
import pytest

from common.contracts import DecodedImage
from common.settings import Settings, SettingsError
from deployments.inference.cache import PredictionCache
from deployments.inference.classifier import ImageClassifier
from deployments.inference.runner import ModelRunner
from deployments.inference.runtimes import load_runtime
from deployments.inference.spec import model_spec_from_settings

SIMULATED = "deployments.inference.simulated:SimulatedRuntime"


def simulated_runner(query: str) -> ModelRunner:
    settings = Settings.from_env({"MODEL_RUNTIME": f"{SIMULATED}?{query}"})
    spec = model_spec_from_settings(settings)
    return ModelRunner(spec, lambda: load_runtime(spec, settings.model_runtime, "f32", "cpu", 1,
                                                  settings.compiled_model_dir))


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 224, 224, 3), dtype=np.uint8)


def test_a_forward_pass_costs_the_batch_time_whatever_the_batch_size_plus_the_image_time():
    runtime = simulated_runner("batch_ms=60&image_ms=5").runtime
    for count in (1, 8):
        started = time.monotonic()
        runtime.forward(images(count))
        assert time.monotonic() - started >= 0.060 + 0.005 * count


def test_probabilities_depend_on_the_image_alone_not_on_its_batch():
    runtime = simulated_runner("batch_ms=0").runtime
    batch = images(4)
    together = runtime.forward(batch)
    assert together.shape == (4, 1000) and together.dtype == np.float32
    np.testing.assert_allclose(together.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(together[2:3], runtime.forward(batch[2:3]))
    assert not np.array_equal(together[0], together[1])


def spins_while(call) -> int:
    """How many times another thread goes round a loop while ``call`` runs on this one."""
    spins, done = 0, threading.Event()

    def spin() -> None:
        nonlocal spins
        while not done.is_set():
            spins += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        call()
    finally:
        done.set()
        spinner.join()
    return spins


def test_the_wait_releases_the_gil_so_other_threads_run_meanwhile():
    runtime = simulated_runner("batch_ms=300").runtime
    # Against a plain sleep of the same length, on the same machine: a pass that held the GIL
    # would leave the other thread next to no turns.
    assert spins_while(lambda: runtime.forward(images(1))) > spins_while(lambda: time.sleep(0.3)) / 4


def test_the_service_reports_the_simulated_model_by_name():
    runner = simulated_runner("batch_ms=30&image_ms=0.5")
    assert runner.runtime.name == "simulated (30 ms per batch + 0.5 ms per image)"
    classifier = ImageClassifier(runner, PredictionCache(0, enabled=False))
    decoded = DecodedImage(images(1)[0], 640, 480, "JPEG")
    prediction = asyncio.run(classifier.classify(decoded, "ab" * 32, 3))
    assert len(prediction.classes) == 3


@pytest.mark.parametrize("raw", [
    "simulated", "deployments.inference.simulated", f"{SIMULATED}?batch_ms=thirty", f"{SIMULATED}?batch_ms",
])
def test_a_runtime_that_is_neither_a_choice_nor_an_import_path_is_refused(raw):
    with pytest.raises(SettingsError, match="MODEL_RUNTIME"):
        Settings.from_env({"MODEL_RUNTIME": raw})


def test_while_a_pass_runs_the_runner_says_about_how_much_longer_it_takes():
    runner = simulated_runner("batch_ms=400")  # the warm-up pass sets the expected length
    assert runner.busy_for_s() == 0

    async def midway() -> tuple[float, float]:
        task = asyncio.ensure_future(runner.top_classes(images(2), 1))
        await asyncio.sleep(0.1)
        first = runner.busy_for_s()
        await asyncio.sleep(0.1)
        later = runner.busy_for_s()
        await task
        return first, later

    first, later = asyncio.run(midway())
    assert first > later > 0  # counting down through the 0.4 s pass
    assert runner.busy_for_s() == 0
