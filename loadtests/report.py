"""What every benchmark of this folder shares: its --config and --out options, and a JSON report
that names the machine it ran on."""

from __future__ import annotations

import argparse
import json
import os
from importlib.metadata import version
from pathlib import Path


def add_config_and_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("serve_config.yaml"),
                        help="the Serve config, in the project folder (default: ./serve_config.yaml)")
    parser.add_argument("--out", type=Path, help="write the report here as JSON")


def check_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.config.is_file():
        parser.error(f"no Serve config at {args.config}; run from the project folder or pass --config")


def write_report(args: argparse.Namespace, **sections: object) -> None:
    """``sections`` as JSON at ``args.out``, after the machine and the command's options."""
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"}
    report = {"machine": machine(), "options": options, **sections}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nreport: {args.out}")


def machine() -> dict:
    return {"cpus": os.cpu_count(), "cpu": _cpu_model(), "torch": version("torch"),
            "openvino": version("openvino"), "ray": version("ray")}


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
