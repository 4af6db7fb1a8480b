"""Composes the deployment graph; ``serve_config.yaml`` points its ``import_path`` here."""

from __future__ import annotations

from ray.serve import Application

from common.settings import get_settings
from deployments.inference.deployment import Inference
from deployments.inference.repository import ModelEntry, model_repository
from deployments.inference.spec import geometry_of
from deployments.preprocessing import Preprocessing
from deployments.validation import Validation
from serve_app.ingress import Ingress


def build_app(args: dict | None = None) -> Application:
    """Build the graph: one Inference deployment per model of the repository (``args["models"]``,
    else the one ``MODEL_NAME`` names). Settings and the repository are parsed here first, so a bad
    environment variable or entry fails the deployment with a message naming it before any replica
    starts."""
    default, *more = model_repository(args or {}, get_settings())
    return Ingress.bind(
        Validation.bind(), Preprocessing.bind(geometry_of(default.source)), _inference(default),
        {entry.name: (_inference(entry), geometry_of(entry.source)) for entry in more},
        default_model=default.name,
    )


def _inference(entry: ModelEntry) -> Application:
    return Inference.options(name=entry.deployment).bind(entry)
