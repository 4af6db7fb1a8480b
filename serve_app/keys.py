"""API keys: the key file, constant-time checks against its hashes, and per-key rate limits.

The file named by ``API_KEYS_FILE`` holds one ``<key_id>:<sha256 hex of the key>`` per line; blank
lines and ``#`` comments are ignored, and only hashes are ever stored. Make a key with

    python -m serve_app.keys new <key_id> --file PATH

which prints the key once and appends its hash line.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import math
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import RateLimited, Unauthorized
from common.settings import SettingsError

KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
KEY_BYTES = 32  # 256 bits from secrets


def parse_key_file(path: Path) -> dict[str, str]:
    """key_id -> sha256 hex. A malformed line raises :class:`SettingsError` naming it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"API_KEYS_FILE={str(path)!r} cannot be read: {exc}") from None
    hashes: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, colon, digest = line.partition(":")
        where = f"API_KEYS_FILE {path}:{number}"
        if not colon or not KEY_ID.fullmatch(key_id.strip()):
            raise SettingsError(f"{where}: expected <key_id>:<sha256 hex>, with a key_id of letters, digits, _ . -")
        if not SHA256_HEX.fullmatch(digest.strip()):
            raise SettingsError(f"{where}: {key_id.strip()!r} needs the key's SHA-256 as 64 lowercase hex digits")
        if key_id.strip() in hashes:
            raise SettingsError(f"{where}: key_id {key_id.strip()!r} appears twice")
        hashes[key_id.strip()] = digest.strip()
    return hashes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class TokenBucket:
    """``rate`` tokens a second, up to ``burst``; one request takes one token."""

    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens, self.updated = float(self.burst), self.clock()

    def take(self) -> float:
        """0 when a token was taken; otherwise the seconds until one is there."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class AccessControl:
    """Who may call, and how often: per ingress replica, so each replica enforces the limit on its
    own share of the traffic (N replicas admit up to N times RATE_LIMIT_RPS) and no request waits
    on a shared store."""

    def __init__(self, hashes: dict[str, str], rate: float | None, burst: int | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._hashes = {key_id: bytes.fromhex(digest) for key_id, digest in hashes.items()}
        self._rate, self._burst, self._clock = rate, burst, clock
        self._buckets: dict[str, TokenBucket] = {}

    def limit(self, key_id: str) -> None:
        """Take a token from the key's bucket; raise :class:`RateLimited` when it is empty."""
        if self._rate is not None:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                burst = self._burst or max(1, math.ceil(self._rate))
                bucket = self._buckets[key_id] = TokenBucket(self._rate, burst, self._clock)
            wait_s = bucket.take()
            if wait_s:
                raise RateLimited(f"key {key_id!r} is over its rate limit of {self._rate:g} requests/s", wait_s)

    def identify(self, authorization: str | None) -> str:
        """The key_id of the presented key; raises :class:`Unauthorized`."""
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
        presented = hashlib.sha256(key.strip().encode()).digest()
        # Compare against every hash, whatever matches, so timing says nothing about the keys.
        matches = [key_id for key_id, digest in self._hashes.items() if hmac.compare_digest(presented, digest)]
        if not matches:
            raise Unauthorized("the API key is not valid")
        return matches[0]


def new_key(key_id: str, path: Path) -> str:
    """Append the hash line of a fresh random key for ``key_id`` to ``path``; return the key."""
    if not KEY_ID.fullmatch(key_id):
        raise SettingsError(f"key_id {key_id!r}: use letters, digits, _ . - (at most 64)")
    existing = parse_key_file(path) if path.exists() else {}
    if key_id in existing:
        raise SettingsError(f"key_id {key_id!r} is already in {path}; revoke it first or pick another id")
    key = secrets.token_urlsafe(KEY_BYTES)
    with path.open("a", encoding="utf-8") as keys:
        if path.stat().st_size and not path.read_text(encoding="utf-8").endswith("\n"):
            keys.write("\n")
        keys.write(f"{key_id}:{hash_key(key)}\n")
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("new", help="make a key, print it once, and append its hash to the file")
    create.add_argument("key_id")
    create.add_argument("--file", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        key = new_key(args.key_id, args.file)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(key)
    print(f"key {args.key_id!r} added to {args.file}; this is the only time the key is shown", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
