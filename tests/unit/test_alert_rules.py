"""The shipped Prometheus config and alert rules: valid for Prometheus' own tool, every alert
proven by a `promtool test rules` case, and explained in the runbook.

Needs Debian's `prometheus` package (promtool); .ci/run installs it. Without it these tests fail
and say so: they are never skipped."""

import re
import subprocess
from pathlib import Path

import yaml

from tests.integration.prometheus import binary

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
RULE_TESTS = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
ALERTS = [rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule]
RUNBOOK = "docs/observability.md#alerts"


def promtool(*args: str) -> str:
    result = subprocess.run([binary("promtool"), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_prometheus_config_and_its_rule_files_are_valid():
    assert yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["rule_files"] == ["alerts.yml"]
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")


def test_every_alert_rule_unit_test_passes():
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_every_alert_fires_in_a_unit_test_and_stays_quiet_in_another():
    cases = [case for test in RULE_TESTS["tests"] for case in test.get("alert_rule_test", [])]
    for alert in ALERTS:
        name = alert["alert"]
        assert any(c["alertname"] == name and c["exp_alerts"] for c in cases), f"{name} never fires in alerts_test.yml"
        assert any(c["alertname"] == name and not c["exp_alerts"] for c in cases), f"{name} is never shown quiet"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_line():
    section = (ROOT / "docs" / "observability.md").read_text().split("\n## Alerts\n", 1)
    assert len(section) == 2, "docs/observability.md has no '## Alerts' section"
    runbook_names = set(re.findall(r"^- `(\w+)`", section[1], flags=re.M))
    assert runbook_names == {alert["alert"] for alert in ALERTS}
    for alert in ALERTS:
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["runbook"] == RUNBOOK, alert["alert"]
