"""Guards every load tool: traffic goes to this machine's loopback interface and nowhere else."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse


def require_loopback(url: str) -> str:
    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"refusing to send load to {url!r}: only 127.0.0.1/localhost are allowed")
    return url.rstrip("/")
