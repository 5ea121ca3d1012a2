"""deploy/prometheus: promtool checks the rules, their unit tests and the scrape config, and
every series an alert reads is one the portal exports.

promtool comes with Debian's ``prometheus`` package. Without it the promtool tests are
skipped, unless ``EPHEMERA_REQUIRE_PROMTOOL=1`` (CI), where a missing promtool fails them.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
OPERATOR_GUIDE = ROOT / "deploy" / "OPERATOR.md"
SERIES_NAME = re.compile(r"\bephemera_[a-z0-9_]+")


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("EPHEMERA_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is missing (EPHEMERA_REQUIRE_PROMTOOL=1): install `prometheus`")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603
        command, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_the_alert_rules_are_valid(promtool):
    checked = run(promtool, "check", "rules", "alerts.yml", cwd=PROMETHEUS)

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alert_rules_pass_their_unit_tests(promtool):
    tested = run(promtool, "test", "rules", "alerts.test.yml", cwd=PROMETHEUS)

    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_scrape_config_is_valid_and_loads_the_alerts(promtool, tmp_path):
    # promtool opens the token file the config names: a stand-in, outside the repository.
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "ephemera-metrics-token").write_text("stand-in")

    checked = run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def test_the_scrape_job_is_the_one_the_alerts_expect():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]

    assert job["job_name"] == "ephemera"
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["credentials_file"] == "secrets/ephemera-metrics-token"
    assert "alerts.yml" in config["rule_files"]
    assert any('up{job="ephemera"}' in rule["expr"] for rule in alert_rules())


def test_every_alert_has_a_case_that_fires_and_one_that_does_not():
    cases = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    outcomes: dict[str, set[bool]] = {}
    for case in cases:
        for check in case["alert_rule_test"]:
            outcomes.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))

    assert outcomes == {rule["alert"]: {True, False} for rule in alert_rules()}


def section_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (code blocks' comments are none)."""
    anchors, in_code = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif line.startswith("#") and not in_code:
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def test_every_alert_has_a_severity_its_labels_in_words_and_a_runbook_section():
    anchors = section_anchors(OPERATOR_GUIDE.read_text())
    for rule in alert_rules():
        annotations = rule["annotations"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["for"], rule["alert"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, rule["alert"]
        assert "{{ $labels." in annotations["summary"] + annotations["description"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "deploy/OPERATOR.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in {page}"


@pytest.mark.django_db
def test_every_series_an_alert_reads_is_exported_at_metrics(client):
    scraped = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    exported = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", scraped, re.MULTILINE):
        exported |= sample_names(family, kind)
    read_by_alerts = {name for rule in alert_rules() for name in SERIES_NAME.findall(rule["expr"])}

    assert read_by_alerts, "the alerts read no ephemera_ series"
    assert read_by_alerts <= exported, sorted(read_by_alerts - exported)


def sample_names(family: str, kind: str) -> set[str]:
    """The series names a family of this type is scraped as."""
    if kind == "counter":
        base = family.removesuffix("_total")
        return {f"{base}_total", f"{base}_created"}
    if kind == "histogram":
        return {f"{family}{suffix}" for suffix in ("_bucket", "_count", "_sum", "_created")}
    return {family}
