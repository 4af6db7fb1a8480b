"""serve_config.gpu.yaml is a config Serve accepts, and it is serve_config.yaml but for the GPU."""

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from common.settings import Settings
from deployments.inference.repository import model_repository

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def differences(shipped, gpu, path: tuple = ()) -> dict[tuple, tuple]:
    """Every path at which the two configs differ: (shipped value, GPU value), None where absent."""
    if isinstance(shipped, dict) and isinstance(gpu, dict):
        found = {}
        for key in shipped.keys() | gpu.keys():
            found |= differences(shipped.get(key), gpu.get(key), (*path, key))
        return found
    if isinstance(shipped, list) and isinstance(gpu, list) and len(shipped) == len(gpu):
        found = {}
        for index, (a, b) in enumerate(zip(shipped, gpu)):
            found |= differences(a, b, (*path, a.get("name", index) if isinstance(a, dict) else index))
        return found
    return {} if shipped == gpu else {path: (shipped, gpu)}


MODELS = ("Inference", "Inference-efficientnet-lite1", "Inference-efficientnet-lite2")


def inference_deployments(config: dict) -> list[dict]:
    return [d for d in config["applications"][0]["deployments"] if d["name"] in MODELS]


def test_serve_accepts_the_gpu_config_and_its_models_share_one_gpu():
    config = ServeDeploySchema.model_validate(load("serve_config.gpu.yaml"))
    shares = {d.name: d.ray_actor_options.num_gpus for d in config.applications[0].deployments
              if d.name in MODELS}
    assert set(shares) == set(MODELS)
    assert all(share > 0 for share in shares.values()) and sum(shares.values()) == 1


def test_the_gpu_config_is_the_cpu_config_but_for_inference_on_the_gpu_and_the_cpu_stages_to_feed_it():
    changed = differences(load("serve_config.yaml"), load("serve_config.gpu.yaml"))
    app = ("applications", "image-classifier", "deployments")
    assert set(changed) == {
        *((*app, model, *path) for model in MODELS for path in (
            ("ray_actor_options", "num_cpus"),
            ("ray_actor_options", "num_gpus"),
            ("ray_actor_options", "runtime_env"),
            ("num_replicas",),
            ("autoscaling_config",),
            ("max_ongoing_requests",),
            ("max_queued_requests",),
        )),
        (*app, "Ingress", "max_replicas_per_node"),
        (*app, "Preprocessing", "ray_actor_options", "num_cpus"),
        (*app, "Preprocessing", "max_replicas_per_node"),
        (*app, "Preprocessing", "autoscaling_config", "min_replicas"),
        (*app, "Preprocessing", "autoscaling_config", "max_replicas"),
    }


def test_every_gpu_replica_runs_batched_torch_on_cuda_with_room_for_its_batches():
    config = load("serve_config.gpu.yaml")
    # Built as `serve run` builds it, from a shell that sets nothing: only the replicas' runtime_env
    # puts them on the GPU.
    entries = {e.deployment: e for e in model_repository(config["applications"][0]["args"], Settings.from_env({}))}
    for inference in inference_deployments(config):
        settings = Settings.from_env(inference["ray_actor_options"]["runtime_env"]["env_vars"])
        runtime = entries[inference["name"]].runtime_on(settings.model_device)
        assert (settings.model_device, runtime) == ("cuda", "torch"), inference["name"]
        assert settings.model_max_batch_size > 1
        # Serve's advice, and the cure of the stall in docs/performance.md: room for a running batch
        # and the next ones, so callers never wait in their router's backoff for a free slot.
        assert inference["max_ongoing_requests"] >= 2 * settings.model_max_batch_size
