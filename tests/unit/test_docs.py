"""The README stays true: its test command is what CI runs, and its tables match the code."""

import re
from pathlib import Path

from common.settings import markdown_table

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


def readme_configuration_table() -> str:
    start = README.index("| Variable | Default | Meaning |")
    return README[start:].split("\n\n", 1)[0].strip()


def test_configuration_table_is_the_settings_module_word_for_word():
    """Names, defaults and text come from common/settings.py; `python -m common.settings --markdown`
    prints the table to paste."""
    assert readme_configuration_table() == markdown_table()
