"""deploy/kuberay/rayservice.yaml is a RayService KubeRay accepts, and it runs serve_config.yaml.

No cluster: the manifest is checked against the vendored RayService CRD's OpenAPI schema, and its
serveConfigV2 against Ray Serve's own config schema and against serve_config.yaml.
"""

from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from tests.integration.serve_process import deployment_config

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kuberay" / "rayservice.yaml"
CRD = ROOT / "deploy" / "kuberay" / "crd" / "ray.io_rayservices.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def load(path: Path):
    # The CRD is 1 MB of YAML: the C loader reads it in a fraction of the pure-Python one's time.
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def closed(schema: dict) -> dict:
    """The schema with unknown fields rejected, as `kubectl apply` does (strict field validation);
    jsonschema would accept them, so a misspelt field would pass."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {name: closed(sub) for name, sub in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = closed(schema[key])
    if "anyOf" in schema:
        schema["anyOf"] = [closed(sub) for sub in schema["anyOf"]]
    return schema


CRD_DOC = load(CRD)
(V1,) = [version for version in CRD_DOC["spec"]["versions"] if version["name"] == "v1"]
# OpenAPI v3.0 schemas are a draft-4 dialect; the x-kubernetes-* keywords are ignored.
VALIDATOR = jsonschema.Draft4Validator(closed(V1["schema"]["openAPIV3Schema"]))


@pytest.fixture
def manifest() -> dict:
    return load(MANIFEST)


def serve_config_v2(manifest: dict) -> dict:
    return yaml.safe_load(manifest["spec"]["serveConfigV2"])


def test_manifest_validates_against_the_rayservice_crd(manifest):
    assert manifest["apiVersion"] == f"{CRD_DOC['spec']['group']}/{V1['name']}"
    assert manifest["kind"] == CRD_DOC["spec"]["names"]["kind"]
    VALIDATOR.validate(manifest)


def cluster(manifest: dict) -> dict:
    return manifest["spec"]["rayClusterConfig"]


BREAKAGES = {
    "wrong type": lambda m: cluster(m)["workerGroupSpecs"][0].update(minReplicas="1"),
    "required field missing": lambda m: cluster(m)["headGroupSpec"].pop("template"),
    "unknown field": lambda m: cluster(m).update(enableInTreeAutoScaling=True),
    "bad quantity": lambda m: cluster(m)["headGroupSpec"]["template"]["spec"]["containers"][0][
        "resources"]["limits"].update(memory="8 GB"),
}


@pytest.mark.parametrize("breakage", BREAKAGES.values(), ids=BREAKAGES.keys())
def test_crd_validation_rejects_a_broken_manifest(manifest, breakage):
    breakage(manifest)  # a fresh copy per test
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(manifest)


def test_manifest_runs_the_ray_version_the_dockerfile_builds_on(manifest):
    ray_version = cluster(manifest)["rayVersion"]
    assert f"FROM rayproject/ray:{ray_version}-py311" in DOCKERFILE.read_text()


def test_ray_serve_accepts_serve_config_v2(manifest):
    config = ServeDeploySchema.model_validate(serve_config_v2(manifest))
    assert [app.import_path for app in config.applications] == ["serve_app.app:build_app"]


def test_serve_config_v2_is_serve_config_yaml_but_for_the_cluster_differences(manifest):
    expected = load(ROOT / "serve_config.yaml")
    # The differences the manifest documents: proxies listen on the pod's IP, not loopback, and the
    # ingress, validation and preprocessing keep a replica on each of two pods at least.
    expected["http_options"]["host"] = "0.0.0.0"
    deployment_config(expected, "Ingress")["autoscaling_config"]["min_replicas"] = 2
    deployment_config(expected, "Validation")["max_replicas_per_node"] = 1
    deployment_config(expected, "Validation")["autoscaling_config"]["min_replicas"] = 2
    deployment_config(expected, "Preprocessing")["autoscaling_config"]["min_replicas"] = 3
    assert serve_config_v2(manifest) == expected, (
        "serveConfigV2 in deploy/kuberay/rayservice.yaml has drifted from serve_config.yaml"
    )


def container_env(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def test_every_pod_runs_its_own_haproxy_front_door(manifest):
    """Ray's high-throughput guide for KubeRay: HAProxy mode on the head and every worker group,
    so that each pod's port 8000 is its own HAProxy."""
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        env = container_env(container)
        assert env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1", container["name"]
        assert env.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1", container["name"]


def test_the_head_declares_a_dead_pod_dead_within_seconds(manifest):
    """Until Ray declares a node dead, Serve places the replacements of its replicas on it; the
    GCS, on the head, takes health_check_period_ms x health_check_failure_threshold to do so
    (Ray's defaults: 3 000 ms x 5)."""
    (head,) = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"]
    env = container_env(head)
    detection_ms = int(env["RAY_health_check_period_ms"]) * int(env["RAY_health_check_failure_threshold"])
    assert detection_ms <= 5000, detection_ms
