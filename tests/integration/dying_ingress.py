"""A Serve application whose ingress replicas die on request, to show what HAProxy answers then.

``POST /die`` with an ``X-Die-Flag: PATH`` header ends the replica's process before it answers,
if it is the first to take the flag file at PATH (renamed away, so exactly one replica dies per
flag). Any other request answers ``alive`` with the replica's process ID.
"""

from __future__ import annotations

import os

from ray import serve
from starlette.requests import Request
from starlette.responses import PlainTextResponse


@serve.deployment(ray_actor_options={"num_cpus": 0}, health_check_period_s=1)
class DyingIngress:
    async def __call__(self, request: Request) -> PlainTextResponse:
        await request.body()
        flag = request.headers.get("x-die-flag")
        if request.url.path.endswith("/die") and flag:
            try:
                os.rename(flag, f"{flag}.taken")
            except FileNotFoundError:
                pass  # another replica took it: answer
            else:
                os._exit(1)
        return PlainTextResponse(f"alive {os.getpid()}")

