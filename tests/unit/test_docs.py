"""The README stays true: its test command is what CI runs, and its tables match the code."""

import re
from pathlib import Path

from common.settings import ENVIRONMENT

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", README, flags=re.S)


def test_readme_starts_with_serve_and_test_commands():
    serve, test = readme_commands()[:2]
    assert "serve run serve_config.yaml" in serve and "torch==2.13.0" in serve
    assert "pytest" in test and "torch==2.13.0" in test


def test_ci_runs_the_readme_test_command():
    test_command = readme_commands()[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_configuration_table_lists_every_variable_with_its_default():
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \|\s*`?([^`|]*?)`?\s*\|", README, flags=re.M))
    for var in ENVIRONMENT.values():
        assert var.env in rows, f"{var.env} missing from the README configuration table"
        assert rows[var.env].strip() == var.default, var.env
