"""A Serve application whose replicas can be kept from coming back, to take a deployment down on
purpose (the live alert test in test_prometheus.py).

Its replicas start normally while the hold file named at deploy time is absent. Once the file
exists, a replica that is killed is replaced by one that never finishes starting, until the file
is removed: the deployment has no healthy replica, as when every replica of a stage crashes.
"""

from __future__ import annotations

import os
import time

from ray import serve
from starlette.requests import Request
from starlette.responses import PlainTextResponse


@serve.deployment(ray_actor_options={"num_cpus": 0}, health_check_period_s=1)
class Stalling:
    def __init__(self, hold_file: str) -> None:
        while os.path.exists(hold_file):
            time.sleep(0.5)

    async def __call__(self, request: Request) -> PlainTextResponse:
        return PlainTextResponse("up")
