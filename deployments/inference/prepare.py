"""Converts every model that a Serve config's applications serve with OpenVINO into
``COMPILED_MODEL_DIR``, so that their replicas start on a warm cache instead of converting
(``deploy/Dockerfile`` runs it when it builds the image):

    python -m deployments.inference.prepare serve_config.yaml

Each entry's runtime is resolved for the CPU, where OpenVINO runs; a model on torch needs nothing.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

from common.settings import Settings
from deployments.inference.repository import ModelEntry, model_repository
from deployments.inference.runtimes import load_runtime
from deployments.inference.spec import model_spec


def served_models(config: dict, settings: Settings) -> list[ModelEntry]:
    """The model repository of every application in a Serve config, in order."""
    return [entry for app in config["applications"] for entry in model_repository(app.get("args") or {}, settings)]


def prepare(config: dict, settings: Settings) -> list[str]:
    """Converts what the config serves with OpenVINO; the names of the models converted or found."""
    prepared = []
    for entry in served_models(config, settings):
        if entry.runtime_on("cpu") == "openvino":
            load_runtime(model_spec(entry.source, entry.name), "openvino", entry.precision, "cpu", 1,
                         settings.compiled_model_dir)
            prepared.append(entry.name)
    return prepared


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="a Serve config, such as serve_config.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings.from_env()
    names = prepare(yaml.safe_load(args.config.read_text()), settings)
    print(f"{len(names)} model(s) ready in {settings.compiled_model_dir}: {', '.join(names) or 'none'}")


if __name__ == "__main__":
    main()
