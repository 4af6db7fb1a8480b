"""Composes the deployment graph; ``serve_config.yaml`` points its ``import_path`` here."""

from __future__ import annotations

from ray.serve import Application

from common.settings import get_settings
from deployments.inference.deployment import Inference
from deployments.inference.spec import input_geometry
from deployments.preprocessing import Preprocessing
from deployments.validation import Validation
from serve_app.ingress import Ingress


def build_app(args: dict[str, str] | None = None) -> Application:
    """Build the graph. Settings are parsed here first, so a bad environment variable fails the
    deployment with a message naming it before any replica starts."""
    settings = get_settings()
    return Ingress.bind(Validation.bind(), Preprocessing.bind(input_geometry(settings)), Inference.bind())
