"""The shipped Prometheus config, Grafana dashboard and alert rules in a real Prometheus (Debian's
package), scraping the session's test cluster: every panel query after real traffic, the rules
evaluated on live data, and two alerts made to fire by taking a deployment's replicas away."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import ray
import requests
import yaml
from ray import serve

from tests.images import unique_photo_bytes
from tests.integration import prometheus as prom
from tests.integration.conftest import INFERENCE_REPLICAS, ROOT, SERVICE_ENV, free_port
from tests.integration.metrics import wait_for
from tests.integration.stalling_app import Stalling

pytestmark = pytest.mark.integration
APP = "image-classifier"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
ALERT_RULES = yaml.safe_load((prom.SHIPPED_CONFIG.parent / "alerts.yml").read_text())
# Scraping every second keeps a rate's extrapolation to its window's edges small (below).
SCRAPE_INTERVAL = "1s"
RATE_WINDOW_S = 60  # the panels' rate(...[1m])
# Ray's metrics agent publishes every 10 s: counters unchanged for longer have published it all.
QUIET = "15s"
# What the panels count; changes() drops metric names, so each is summed on its own.
COUNTERS = ("ray_serve_num_http_requests_total", "ray_image_requests_total", "ray_image_rejections_total",
            "ray_image_cache_hits_total", "ray_image_cache_misses_total", "ray_image_stage_latency_ms_count",
            "ray_image_decoded_megapixels_count")
PHOTO_MEGAPIXELS = 320 * 240 / 1e6  # unique_photo_bytes' size, in MEGAPIXEL_BUCKETS' (0.05, 0.1]
STALLING_APP = "stalling"


@pytest.fixture(scope="module")
def prometheus(service, tmp_path_factory) -> Iterator[prom.Prometheus]:
    targets = {"image-classifier": urlparse(service.metrics_url).netloc,
               "front-door": f"127.0.0.1:{service.ports.haproxy_metrics}"}
    config = prom.config_for(targets, SCRAPE_INTERVAL)
    with prom.running(config, tmp_path_factory.mktemp("prometheus"), free_port()) as server:
        up = wait_for(lambda: [t["health"] for t in server.targets()] == ["up", "up"], timeout_s=30)
        assert up, server.targets()
        yield server


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows' panels included."""
    def panels(items: list[dict]) -> Iterator[dict]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    # $model is the dashboard's model selector; Grafana's "All" sends its allValue, .*
    return [(panel["title"], target["expr"].replace("$model", ".*")) for dashboard in DASHBOARDS
            for panel in panels(json.loads(dashboard.read_text())["panels"]) for target in panel.get("targets", [])]


def classify(service, data: bytes) -> requests.Response:
    return requests.post(service.url("/v1/classify"), data=data, timeout=60)


def send_traffic(service, photos: int, junk: int) -> dict[str, int]:
    """Each of ``photos`` new photos twice (a miss, then a cache hit) and ``junk`` uploads that are
    no image (415); the count of answers by status."""
    for _ in range(photos):
        data = unique_photo_bytes()
        assert classify(service, data).json()["cached"] is False
        assert classify(service, data).json()["cached"] is True
    for _ in range(junk):
        assert classify(service, b"not an image").status_code == 415
    return {"200": 2 * photos, "415": junk}


def wait_until_published(prometheus: prom.Prometheus) -> None:
    """Until the app's counters have been still for longer than Ray's publishing period."""
    moving = " + ".join(f'sum(changes({name}{{application="{APP}"}}[{QUIET}]))' for name in COUNTERS)
    time.sleep(int(QUIET.removesuffix("s")))
    assert wait_for(lambda: float(prometheus.query(moving)[0]["value"][1]) == 0), "counters kept moving"


def values(results: list[dict]) -> list[float]:
    return [float(r["value"][1]) for r in results]


def by(label: str, results: list[dict]) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in results}


def assert_matches_traffic(per_second: float, sent: int) -> None:
    """A [1m] rate times 60 against the requests sent inside the window. Prometheus extrapolates
    from the first and last samples to the window's edges, at most a scrape interval each side:
    at most 60/58 of the count, so 5% above it and never below."""
    assert sent - 1e-6 <= per_second * RATE_WINDOW_S <= sent * 1.05, (per_second * RATE_WINDOW_S, sent)


def assert_quantiles_ordered(p50: float, p95: float, p99: float | None = None) -> None:
    ordered = [p50, p95] if p99 is None else [p50, p95, p99]
    assert all(math.isfinite(v) and v > 0 for v in ordered), ordered
    assert ordered == sorted(ordered), ordered


def test_every_dashboard_query_returns_plausible_values_after_real_traffic(service, prometheus):
    queries = panel_queries()
    assert len(queries) >= 15, queries
    send_traffic(service, photos=3, junk=1)  # every series exists before the measured window

    def without_data() -> list[str]:
        return [title for title, expr in queries if not prometheus.query(expr)]

    wait_for(lambda: not without_data())
    assert not without_data(), "panels without data"
    wait_until_published(prometheus)

    start = time.time()
    sent = send_traffic(service, photos=12, junk=6)
    wait_until_published(prometheus)
    assert time.time() < start + RATE_WINDOW_S - 2, "the traffic took too long to fit the panels' 1-minute window"
    at = start + RATE_WINDOW_S - 2  # the window starts just before the first request
    time.sleep(max(0.0, at + 2 - time.time()))
    results: dict[str, list[list[dict]]] = {title: [] for title, _ in queries}
    for title, expr in queries:
        result = prometheus.query(expr, at)
        assert result and all(math.isfinite(v) for v in values(result)), (title, expr, result)
        results[title].append(result)  # one result per target of the panel

    def panel(prefix: str) -> list[list[dict]]:
        (title,) = [t for t in results if t.startswith(prefix)]
        return results[title]

    # Series of statuses that earlier tests answered are there too, at rate 0.
    (by_status,) = panel("Request rate by HTTP status")
    rates = {status: rate for status, rate in by("status_code", by_status).items() if rate}
    assert rates.keys() == sent.keys()
    for status, count in sent.items():
        assert_matches_traffic(rates[status], count)
    (rejections,) = panel("Rejections by status and error code")
    rejected = {(r["metric"]["status"], r["metric"]["code"]): float(r["value"][1]) for r in rejections}
    assert {key for key, rate in rejected.items() if rate} == {("415", "unsupported_media_type")}
    assert_matches_traffic(rejected["415", "unsupported_media_type"], sent["415"])
    (per_key,) = panel("Requests per API key")
    keyed = {(r["metric"]["key_id"], r["metric"]["status"]): float(r["value"][1]) for r in per_key}
    assert {key for key, rate in keyed.items() if rate} == {("-", status) for status in sent}
    for status, count in sent.items():
        assert_matches_traffic(keyed["-", status], count)
    (front_door,) = panel("Front door requests per second")
    assert_matches_traffic(sum(values(front_door)), sum(sent.values()))
    (front_door_5xx,) = panel("Front door 5xx")
    assert values(front_door_5xx) == [0.0]

    assert_quantiles_ordered(*(values(r)[0] for r in panel("End-to-end latency")))
    p50s, p95s, p99s = (by("stage", r[0]) for r in (panel(f"Stage latency {q}") for q in ("P50", "P95", "P99")))
    assert p50s.keys() == {"validation", "preprocess", "inference", "end_to_end"}
    for stage in p50s:
        assert_quantiles_ordered(p50s[stage], p95s[stage], p99s[stage])
    p50, p95 = (values(r)[0] for r in panel("Decoded image size"))
    assert_quantiles_ordered(p50, p95)
    # Nearly all decodes in the 5-minute window are this module's photos (an earlier module's last
    # few may be published after Prometheus started).
    assert 0.05 <= p50 <= 0.1, f"the {PHOTO_MEGAPIXELS} MP photos' bucket is (0.05, 0.1]"

    (overall,) = panel("Cache hit rate, overall")
    assert 0 < values(overall)[0] < 1, "fresh photos and their repeats"
    (ratios,) = panel("Cache hit ratio per model replica")
    assert values(ratios) and all(0 <= v <= 1 for v in values(ratios)), ratios
    # Ray's agent goes on exporting the last values of replicas that earlier tests killed.
    size, capacity = panel("Cache entries and capacity")
    assert set(values(capacity)) == {float(SERVICE_ENV["MODEL_CACHE_SIZE"])}
    assert all(0 <= v <= float(SERVICE_ENV["MODEL_CACHE_SIZE"]) for v in values(size)) and sum(values(size)) > 0
    (calls,) = panel("Calls per model replica")
    assert sum(values(calls)) > 0
    (healthy,) = panel("Healthy replicas per deployment")
    replicas = by("deployment", healthy)
    assert replicas.pop("Inference") == INFERENCE_REPLICAS
    assert replicas.keys() == {"Ingress", "Validation", "Preprocessing"} and min(replicas.values()) >= 1

    (queue,) = panel("Front door queue")
    assert set(values(queue)) == {0.0}, "no request waits in HAProxy once the traffic is answered"
    active, backup = panel("Front door backends")
    assert by("proxy", active)[f"http-{APP}"] >= 1, "the app's ingress replica"
    assert by("proxy", backup)[f"http-{APP}"] == 1, "Serve's fallback proxy"


def test_the_alert_rules_evaluate_on_live_data_and_none_fires_while_the_service_is_healthy(prometheus):
    shipped = [rule.get("alert", rule.get("record")) for group in ALERT_RULES["groups"] for rule in group["rules"]]

    def evaluated() -> list[dict] | None:
        rules = [rule for group in prometheus.rules() for rule in group["rules"]]
        never = "0001-01-01T00:00:00Z"
        return rules if all(rule["lastEvaluation"] != never for rule in rules) else None

    rules = wait_for(evaluated, timeout_s=30)
    assert rules and [rule["name"] for rule in rules] == shipped
    assert [(rule["name"], rule["lastError"]) for rule in rules if rule["health"] != "ok"] == []
    assert [alert for alert in prometheus.alerts() if alert["state"] == "firing"] == []



@pytest.fixture
def stalling_app(service, tmp_path) -> Iterator[Path]:
    """stalling_app.py at /stalling, answering through the front door; yields its hold file."""
    hold = tmp_path / "hold"
    serve.run(Stalling.bind(str(hold)), name=STALLING_APP, route_prefix=f"/{STALLING_APP}")
    # HAProxy learns of the new application by a reload.
    assert wait_for(lambda: requests.get(service.url(f"/{STALLING_APP}"), timeout=10).text == "up", timeout_s=60)
    yield hold
    hold.unlink(missing_ok=True)
    serve.delete(STALLING_APP)


def _kill_every_replica(app: str) -> None:
    names = [actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
             if actor["name"].startswith(f"SERVE_REPLICA::{app}#")]
    assert names
    for name in names:
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


def test_taking_every_replica_away_fires_the_not_ready_and_front_door_alerts_until_one_is_back(
        prometheus, stalling_app):
    expected = {("ImageClassifierDeploymentUnhealthy", STALLING_APP),
                ("ImageClassifierFrontDoorNoReplica", STALLING_APP)}

    def alerts(state: str) -> set[tuple[str, str]]:
        return {(a["labels"]["alertname"], a["labels"].get("application") or a["labels"].get("proxy", "").removeprefix("http-"))
                for a in prometheus.alerts() if a["state"] == state}

    stalling_app.touch()  # replacements never finish starting
    _kill_every_replica(STALLING_APP)
    # The shipped rules, `for: 1m` included: about 80 s with Ray's publishing delay.
    assert wait_for(lambda: expected <= alerts("firing"), timeout_s=180), prometheus.alerts()
    assert alerts("firing") == expected, "nothing else fires"
    stalling_app.unlink()  # the replacement starts
    assert wait_for(lambda: not expected & (alerts("firing") | alerts("pending")), timeout_s=120), prometheus.alerts()
