"""Real HTTP against the real Ray Serve graph started by `serve run` (see conftest.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.images import PHOTO_PLAUSIBLE_LABELS, photo_bytes, riff, shipped_photos, unique_photo_bytes
from tests.integration.conftest import NO_CACHE_ENV, NO_CACHE_PREFIX, SERVICE_ENV
from tests.integration.metrics import scrape, total, wait_for

pytestmark = pytest.mark.integration
TIMEOUT = 60


def post(service, data, path="/v1/classify", **kwargs) -> requests.Response:
    return requests.post(service.url(path), data=data, timeout=TIMEOUT, **kwargs)


def assert_error(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code
    assert body["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


def test_health_and_readiness(service):
    assert requests.get(service.url("/healthz"), timeout=TIMEOUT).json() == {"status": "ok"}
    ready = requests.get(service.url("/readyz"), timeout=TIMEOUT)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


def test_model_endpoint_reports_model_and_cache_settings_from_the_environment(service):
    info = requests.get(service.url("/v1/model"), timeout=TIMEOUT).json()
    assert info["name"] == "efficientnet-lite0"
    assert len(info["version"]) == 12
    assert info["input_size"] == [224, 224]
    assert info["num_classes"] == 1000
    assert info["cache"] == {"enabled": True, "size": int(SERVICE_ENV["MODEL_CACHE_SIZE"])}
    assert (info["runtime"], info["precision"], info["device"]) == ("openvino", "f32", "cpu")
    no_cache = requests.get(service.url(NO_CACHE_PREFIX + "/v1/model"), timeout=TIMEOUT).json()
    assert no_cache["cache"]["enabled"] is False
    assert no_cache["runtime"] == NO_CACHE_ENV["MODEL_RUNTIME"]
    assert info["batching"]["max_batch_size"] == 1
    assert no_cache["batching"] == {"max_batch_size": int(NO_CACHE_ENV["MODEL_MAX_BATCH_SIZE"]),
                                    "wait_ms": int(NO_CACHE_ENV["MODEL_BATCH_WAIT_MS"])}


def test_model_replica_logs_its_cache_state_at_start_up(service):
    assert f"model cache: enabled, size {SERVICE_ENV['MODEL_CACHE_SIZE']}" in service.replica_logs("Inference")


def test_serve_run_console_shows_the_model_and_cache_but_not_each_request(service):
    assert post(service, unique_photo_bytes()).status_code == 200
    started = f"loaded: openvino f32 on cpu; model cache: enabled, size {SERVICE_ENV['MODEL_CACHE_SIZE']}"

    def console_lines() -> list[str]:
        # The session's other apps (lite1, lite2) log to the same console, and Ray folds repeats of
        # one line across apps, so any line naming the default model counts.
        return [line for line in service.log_path.read_text(errors="replace").splitlines()
                if started in line and "efficientnet-lite0@" in line]

    assert wait_for(console_lines, timeout_s=30), service.log_path.read_text()[-4000:]
    assert "model cache: disabled" in service.log_path.read_text()  # the cache-disabled copy of the app
    assert "classified, top class" not in service.log_path.read_text(), "per-request lines stay in the files"


@pytest.mark.parametrize("fmt,key", [("JPEG", "jpeg"), ("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp")])
def test_each_format_is_classified(service, fmt, key):
    data = unique_photo_bytes(fmt)
    response = post(service, data, headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"request_id", "model", "image", "predictions", "cached"}
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert body["model"]["name"] == "efficientnet-lite0" and body["model"]["version"]
    assert body["image"] == {"format": key, "width": 320, "height": 240}
    assert body["cached"] is False
    predictions = body["predictions"]
    assert len(predictions) == 5
    assert all(set(p) == {"class_id", "label", "score"} for p in predictions)
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] <= 1
    assert predictions[0]["label"] in PHOTO_PLAUSIBLE_LABELS, predictions


def test_full_size_photo_as_curl_sends_it(service):
    response = requests.post(service.url("/v1/classify"), data=photo_bytes("JPEG"), timeout=TIMEOUT,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    labels = [p["label"] for p in response.json()["predictions"]]
    assert len(PHOTO_PLAUSIBLE_LABELS.intersection(labels)) >= 3, labels


def test_multipart_upload_in_field_file(service):
    data = unique_photo_bytes("PNG")
    response = requests.post(
        service.url("/v1/classify"), files={"file": ("photo.png", data, "image/png")}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    assert response.json()["image"]["format"] == "png"


def test_multipart_without_file_field_is_bad_request(service):
    response = requests.post(
        service.url("/v1/classify"), files={"image": ("photo.png", unique_photo_bytes("PNG"), "image/png")},
        timeout=TIMEOUT,
    )
    assert_error(response, 400, "malformed_multipart")


def test_malformed_multipart_is_bad_request(service):
    response = post(service, b"--nope\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert_error(response, 400, "malformed_multipart")


@pytest.mark.parametrize("container", [b"AVI ", b"WAVE"])
def test_avi_and_wav_are_unsupported(service, container):
    response = post(service, riff(container, b"LIST" + b"\x00" * 64), headers={"Content-Type": "image/webp"})
    assert_error(response, 415, "unsupported_media_type")


def test_wrong_image_content_type_is_not_trusted(service):
    response = post(service, unique_photo_bytes("PNG"), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    assert response.json()["image"]["format"] == "png"


def test_repeat_is_cached_with_the_same_answer(service):
    data = unique_photo_bytes("JPEG")
    first, second = post(service, data).json(), post(service, data).json()
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["predictions"] == second["predictions"]
    assert first["request_id"] != second["request_id"]


def test_disabled_cache_never_answers_from_cache(service):
    data = unique_photo_bytes("JPEG")
    path = NO_CACHE_PREFIX + "/v1/classify"
    results = [post(service, data, path=path).json() for _ in range(2)]
    assert [r["cached"] for r in results] == [False, False]
    assert results[0]["predictions"] == results[1]["predictions"]


def test_requests_batched_into_one_forward_pass_each_get_their_own_answer(service):
    """The /nocache app batches 2 concurrent requests per forward pass: concurrent answers must
    match the one-at-a-time answers image by image, and Serve's batch-size histogram must show
    pairs."""
    path = NO_CACHE_PREFIX + "/v1/classify"
    photos = [data for name, data in shipped_photos().items() if len(data) < 300_000][:10]

    def batches() -> tuple[float, float]:
        """(forward passes, those of more than one image), from the bucket of ones."""
        samples = [s for s in scrape(service) if s.labels.get("application") == "image-classifier-nocache"
                   and s.labels.get("function_name") == "_classify_together"]
        passes = total(samples, "ray_serve_actual_batch_size_count")
        ones = sum(s.value for s in samples if s.name == "ray_serve_actual_batch_size_bucket"
                   and float(s.labels["le"]) == 1)
        return passes, passes - ones

    alone = [post(service, data, path=path, params={"top_k": 3}).json()["predictions"] for data in photos]
    assert len({answer[0]["class_id"] for answer in alone}) > 3, "the photos must differ for this to prove anything"
    # Ray exports every few seconds: wait until the one-at-a-time passes are counted.
    assert wait_for(lambda: batches()[0] >= len(photos))
    _, batched_before = batches()
    # 2 at a time, the batch size. Not 3: Serve's router counts a call as queued until it is
    # assigned, so 3 arriving at once can overflow the copy's max_queued_requests of 2 (a 503).
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda data: post(service, data, path=path, params={"top_k": 3}), photos))
    assert [r.status_code for r in together] == [200] * len(photos), [r.text for r in together]
    for one, batched in zip(alone, (r.json()["predictions"] for r in together), strict=True):
        assert [p["class_id"] for p in batched] == [p["class_id"] for p in one]
        assert [p["score"] for p in batched] == pytest.approx([p["score"] for p in one], abs=1e-4)
    assert wait_for(lambda: batches()[1] > batched_before), "no forward pass took more than one image"


@pytest.mark.parametrize("top_k", [1, 3, 1000])
def test_top_k_controls_prediction_count(service, top_k):
    response = post(service, unique_photo_bytes("JPEG"), params={"top_k": top_k})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == top_k


@pytest.mark.parametrize("top_k", ["0", "1001", "-1", "abc", "2.5", ""])
def test_invalid_top_k_is_bad_request(service, top_k):
    assert_error(post(service, unique_photo_bytes("JPEG"), params={"top_k": top_k}), 400, "invalid_parameter")


def test_empty_body_is_bad_request(service):
    assert_error(post(service, b""), 400, "empty_body")


def test_body_over_the_limit_is_refused(service):
    limit = int(SERVICE_ENV["MAX_UPLOAD_BYTES"])
    oversized = photo_bytes("PNG") + b"\x00" * limit
    assert_error(post(service, oversized), 413, "payload_too_large")


def test_chunked_body_over_the_limit_is_refused(service):
    limit = int(SERVICE_ENV["MAX_UPLOAD_BYTES"])

    def chunks():
        yield photo_bytes("JPEG")
        for _ in range(limit // 65536 + 2):
            yield b"\x00" * 65536

    response = post(service, chunks())
    assert_error(response, 413, "payload_too_large")


def test_body_at_the_limit_is_accepted(service):
    limit = int(SERVICE_ENV["MAX_UPLOAD_BYTES"])
    data = unique_photo_bytes("JPEG")
    padded = data + b"\x00" * (limit - len(data))  # bytes after EOI are ignored by decoders
    response = post(service, padded)
    assert response.status_code == 200, response.text


def test_truncated_jpeg_is_unprocessable(service):
    data = photo_bytes("JPEG")
    assert_error(post(service, data[: len(data) // 3]), 422, "undecodable_image")


def test_request_id_is_honoured_and_echoed(service):
    url = service.url("/v1/classify")
    response = requests.post(url, data=unique_photo_bytes("JPEG"), headers={"X-Request-ID": "client-id-123"},
                             timeout=TIMEOUT)
    assert response.headers["X-Request-ID"] == "client-id-123"
    assert response.json()["request_id"] == "client-id-123"
    error = requests.post(url, data=b"", headers={"X-Request-ID": "client-id-456"}, timeout=TIMEOUT)
    assert error.json()["error"]["request_id"] == "client-id-456"


def test_request_id_is_generated_when_absent_and_unique(service):
    ids = {post(service, unique_photo_bytes("JPEG")).json()["request_id"] for _ in range(3)}
    assert len(ids) == 3 and all(ids)


def test_unknown_route_and_wrong_method_get_json_errors(service):
    assert_error(requests.get(service.url("/v1/nothing"), timeout=TIMEOUT), 404, "not_found")
    assert_error(requests.get(service.url("/v1/classify"), timeout=TIMEOUT), 405, "method_not_allowed")


def test_content_hash_not_client_name_decides_cache_hits(service):
    data = unique_photo_bytes("PNG")
    first = requests.post(service.url("/v1/classify"), files={"file": ("a.png", data)}, timeout=TIMEOUT).json()
    second = requests.post(service.url("/v1/classify"), files={"file": ("b.png", data)}, timeout=TIMEOUT).json()
    assert (first["cached"], second["cached"]) == (False, True)
