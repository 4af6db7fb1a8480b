"""API keys: the key file parser (hostile lines included), the CLI, the checks and the token bucket."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common.errors import RateLimited, Unauthorized
from common.settings import SettingsError
from serve_app.keys import AccessControl, TokenBucket, hash_key, new_key, parse_key_file

DIGEST = "a" * 64


def key_file(tmp_path, text: str):
    path = tmp_path / "keys"
    path.write_text(text)
    return path


def test_comments_blank_lines_and_spaces_are_ignored(tmp_path):
    path = key_file(tmp_path, f"# team keys\n\n  ci:{DIGEST}  \nweb-1.prod:{'b' * 64}\n")
    assert parse_key_file(path) == {"ci": DIGEST, "web-1.prod": "b" * 64}


@pytest.mark.parametrize(("line", "says"), [
    ("no colon here", "expected <key_id>:<sha256 hex>"),
    (f":{DIGEST}", "expected <key_id>"),
    (f"bad id!:{DIGEST}", "expected <key_id>"),
    ("ci:abc123", "64 lowercase hex"),
    (f"ci:{DIGEST.upper()}", "64 lowercase hex"),
    (f"ci:{DIGEST}0", "64 lowercase hex"),
    (f"ci:{DIGEST}\nci:{'b' * 64}", "appears twice"),
    ("ci:plaintext-secret-key", "64 lowercase hex"),
])
def test_a_malformed_line_stops_the_start_naming_the_line(tmp_path, line, says):
    path = key_file(tmp_path, f"# header\n{line}\n")
    with pytest.raises(SettingsError, match=says) as raised:
        parse_key_file(path)
    assert f"{path}:2" in str(raised.value) or f"{path}:3" in str(raised.value)


def test_an_unreadable_file_names_the_variable(tmp_path):
    with pytest.raises(SettingsError, match="API_KEYS_FILE"):
        parse_key_file(tmp_path / "missing")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SettingsError, match="API_KEYS_FILE"):
        parse_key_file(tmp_path / "binary")


def test_cli_prints_a_new_key_once_and_stores_only_its_hash(tmp_path):
    path = tmp_path / "keys"
    run = subprocess.run([sys.executable, "-m", "serve_app.keys", "new", "ci", "--file", str(path)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    key = run.stdout.strip()
    assert len(key) >= 43  # 32 random bytes, base64url
    assert key not in path.read_text() and parse_key_file(path) == {"ci": hash_key(key)}
    again = subprocess.run([sys.executable, "-m", "serve_app.keys", "new", "ci", "--file", str(path)],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "already" in again.stderr


def test_keys_are_checked_against_their_hashes():
    old, new = "old-secret", "new-secret"
    access = AccessControl({"old": hash_key(old), "new": hash_key(new)}, rate=None, burst=None)
    assert access.identify(f"Bearer {old}") == "old" and access.identify(f"bearer  {new}") == "new"
    for header in (None, "", "Bearer", "Basic b2xkOg==", f"Token {old}", "Bearer wrong", f"Bearer {old}x"):
        with pytest.raises(Unauthorized):
            access.identify(header)


def test_key_file_appends_after_a_line_without_newline(tmp_path):
    path = key_file(tmp_path, f"ci:{DIGEST}")
    new_key("web", path)
    assert set(parse_key_file(path)) == {"ci", "web"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_the_burst_then_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() == 0
    clock.now += 60  # idle time refills only up to the burst
    assert [bucket.take() for _ in range(4)][-1] > 0


def test_each_key_has_its_own_bucket_and_429_says_when_to_retry():
    clock = FakeClock()
    access = AccessControl({"a": hash_key("ka"), "b": hash_key("kb")}, rate=0.25, burst=1, clock=clock)
    access.limit(access.identify("Bearer ka"))
    with pytest.raises(RateLimited) as raised:
        access.limit(access.identify("Bearer ka"))
    assert raised.value.retry_after_s == pytest.approx(4)
    access.limit(access.identify("Bearer kb"))
