"""The project imports through its packages, so it runs from the root and after `pip install .`,
and its layers depend one way: serve_app on deployments on common."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("serve_app", "deployments", "common")
# Each layer may import only the layers below it.
LAYERS_BELOW = {"serve_app": {"deployments", "common"}, "deployments": {"common"}, "common": set()}
MODULES = [
    "serve_app.app", "serve_app.ingress", "serve_app.http_errors", "common.settings", "common.errors",
    "common.contracts", "deployments.validation", "deployments.preprocessing",
    "deployments.inference.deployment", "deployments.inference.spec",
]
PROBE = """
import importlib, sys
for name in sys.argv[1:]:
    print(importlib.import_module(name).__file__)
from deployments.validation import ImageValidator
from deployments.inference.spec import model_spec_from_settings
from common.settings import Settings
assert ImageValidator().validate_magic_bytes(b"RIFF\\x10\\x00\\x00\\x00WEBPVP8 ") == (True, "webp")
assert model_spec_from_settings(Settings.from_env({})).labels[285] == "Egyptian cat"
"""


def _project_sources():
    for package in PACKAGES + ("loadtests",):
        yield from (ROOT / package).rglob("*.py")


def test_no_module_imports_a_sibling_by_bare_name():
    offenders = []
    for path in _project_sources():
        siblings = {p.stem for p in path.parent.glob("*.py")} | {
            p.name for p in path.parent.iterdir() if (p / "__init__.py").exists()
        }
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                offenders.append(f"{path.relative_to(ROOT)}: relative import")
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )
            offenders += [
                f"{path.relative_to(ROOT)}: import {n}" for n in names if n.split(".")[0] in siblings
            ]
    assert not offenders


def _imported_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        name for node in ast.walk(tree)
        for name in ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
    ]


def test_layers_import_only_downwards():
    offenders = []
    for layer, allowed in LAYERS_BELOW.items():
        forbidden = set(PACKAGES) - allowed - {layer}
        for path in (ROOT / layer).rglob("*.py"):
            offenders += [
                f"{path.relative_to(ROOT)}: import {name}"
                for name in _imported_names(path) if name.split(".")[0] in forbidden
            ]
    assert not offenders


def test_no_stage_imports_another():
    """What two stages share sits in common/; each stage deploys, scales and fails on its own."""
    stages = {path.stem for path in (ROOT / "deployments").glob("*.py") if path.stem != "__init__"} | {
        path.name for path in (ROOT / "deployments").iterdir() if (path / "__init__.py").exists()}
    offenders = []
    for stage in stages:
        sources = [ROOT / "deployments" / f"{stage}.py"] if (ROOT / "deployments" / f"{stage}.py").exists() \
            else (ROOT / "deployments" / stage).rglob("*.py")
        for path in sources:
            offenders += [
                f"{path.relative_to(ROOT)}: import {name}" for name in _imported_names(path)
                if name.split(".")[0] == "deployments" and name.split(".")[1:2] != [stage]
            ]
    assert stages >= {"validation", "preprocessing", "inference"}
    assert not offenders


def test_load_tools_talk_http_and_only_the_bench_baseline_imports_the_service():
    """The one-process server runs the service's own validator, decoder and model, to compare like
    with like; every other load tool only speaks HTTP to the service."""
    baseline = ROOT / "loadtests" / "one_process_server.py"
    offenders = [
        f"{path.relative_to(ROOT)}: import {name}"
        for path in (ROOT / "loadtests").rglob("*.py") if path != baseline
        for name in _imported_names(path) if name.split(".")[0] in PACKAGES
    ]
    assert not offenders


def test_tests_do_not_import_the_load_tools():
    offenders = [
        f"{path.relative_to(ROOT)}: import {name}"
        for path in (ROOT / "tests").rglob("*.py")
        for name in _imported_names(path) if name.split(".")[0] == "loadtests"
    ]
    assert not offenders


def test_preprocessing_needs_neither_torch_nor_the_model():
    probe = (
        "import sys\n"
        "from common.settings import Settings\n"
        "from deployments.inference.spec import input_geometry\n"
        "import deployments.preprocessing\n"
        "print(input_geometry(Settings.from_env({})))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "size=224" in result.stdout


def _probe(cwd: Path, pythonpath: Path) -> list[Path]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *MODULES], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return [Path(line) for line in result.stdout.splitlines()]


def test_imports_from_project_root_with_pythonpath_dot():
    files = _probe(ROOT, Path("."))
    assert all(f.resolve().is_relative_to(ROOT) for f in files)


def test_imports_from_another_folder_after_pip_install(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True,
    )
    if build.returncode != 0:
        pytest.fail(build.stderr)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    files = _probe(elsewhere, target)
    assert files and all(f.resolve().is_relative_to(target) for f in files), files
