"""The monitoring files in deploy/ stay valid and in step with the metrics the shop exports: Prometheus's promtool
accepts the alerting rules, their unit tests and the example configuration; every metric an alert or a Grafana
panel asks for is one the shop exports (a misspelt name would otherwise show an empty panel or an alert that never
fires); and every panel's query is PromQL.

promtool comes with Debian's `prometheus` package (.ci/run installs it). Without it the promtool tests skip, saying
so, unless SHOP_REQUIRE_PROMETHEUS=1, where they fail instead."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts_test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "shop-dashboard.json"
METRICS_SOURCE = ROOT / "shop" / "telemetry" / "metrics.py"

# A metric-like token of the shop's: shop_ then letters, digits, underscores (colons belong to recording rules).
SHOP_METRIC = re.compile(r"\bshop_[A-Za-z0-9_]+")
# The gauges StateCollector builds at scrape time: GaugeMetricFamily("name", ...).
STATE_GAUGE = re.compile(r"GaugeMetricFamily\(\s*\"([A-Za-z_:][A-Za-z0-9_:]*)\"")
# Grafana's interval variables: promtool does not know them; any duration parses in their place.
GRAFANA_INTERVAL = re.compile(r"\$__(?:rate_interval|interval|range)\b|\$\{__(?:rate_interval|interval|range)\}")
PROMETHEUS_OWN = {"up"}


# -- helpers -------------------------------------------------------------------------------------------------------
def promtool_path() -> str:
    """promtool's path; skips (or fails, with SHOP_REQUIRE_PROMETHEUS=1) when it is not installed."""
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not installed (Debian's `prometheus` package; .ci/run installs it)"
        if os.environ.get("SHOP_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"SHOP_REQUIRE_PROMETHEUS=1 but {reason}")
        pytest.skip(reason)
    return path


def promtool(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool_path(), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )


def assert_succeeds(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)} failed:\n{result.stdout}\n{result.stderr}"


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_panels(panels: list[dict] | None = None) -> list[dict]:
    """Every panel, those inside collapsed rows included."""
    if panels is None:
        panels = json.loads(DASHBOARD.read_text())["panels"]
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(dashboard_panels(panel.get("panels", [])))
    return found


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, expr) of every query of the dashboard: where is `panel <id> (<title>) <refId>`."""
    return [
        (f"panel {panel['id']} ({panel.get('title', '')}) {target.get('refId', '?')}", target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def exported_metrics() -> set[str]:
    """The series names the shop exports: shop.telemetry.metrics's counters (name_total), gauges and histograms
    (name_bucket, name_sum, name_count), StateCollector's gauges, and Prometheus's own `up`."""
    from prometheus_client import Counter, Gauge, Histogram

    from shop.telemetry import metrics

    names = set(PROMETHEUS_OWN)
    for value in vars(metrics).values():
        if not isinstance(value, Counter | Gauge | Histogram):
            continue
        for family in value.describe():
            if family.type == "counter":
                names.add(family.name + "_total")
            elif family.type == "histogram":
                names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
            else:
                names.add(family.name)
    return names | state_gauges()


def state_gauges() -> set[str]:
    return set(STATE_GAUGE.findall(METRICS_SOURCE.read_text()))


def unknown_metrics(text: str, known: set[str]) -> set[str]:
    return set(SHOP_METRIC.findall(text)) - known


# -- the files parse and the alerts' unit tests pass --------------------------------------------------------------
def test_promtool_accepts_the_alerting_rules():
    result = promtool("check", "rules", ALERTS)
    assert_succeeds(result)
    assert f"{len(alert_rules())} rules found" in result.stdout


def test_every_alert_fires_on_its_bad_case_and_stays_quiet_on_its_healthy_one():
    assert_succeeds(promtool("test", "rules", ALERT_TESTS))


def test_promtool_accepts_the_example_prometheus_configuration_and_the_rule_files_it_names():
    result = promtool("check", "config", CONFIG)
    assert_succeeds(result)
    assert "1 rule files found" in result.stdout


def test_every_dashboard_query_parses_as_promql(tmp_path):
    rules = [
        {"record": f"dashboard:panel_{index}", "expr": GRAFANA_INTERVAL.sub("5m", expr)}
        for index, (_, expr) in enumerate(dashboard_queries())
    ]
    assert rules, "the dashboard has no queries"
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    result = promtool("check", "rules", path)
    assert_succeeds(result)
    assert f"{len(rules)} rules found" in result.stdout


# -- the names are the shop's ---------------------------------------------------------------------------------------
def test_the_state_gauges_read_from_the_source_are_the_ones_the_scrape_builds():
    assert state_gauges() == {
        "shop_scrape_errors",
        "shop_queue_jobs",
        "shop_outbox_backlog",
        "shop_outbox_oldest_age_seconds",
        "shop_stream_lag",
        "shop_stream_pending",
        "shop_reservations_active",
        "shop_dependency_up",
        "shop_ready",
        "shop_uploads_disk_free_bytes",
        "shop_uploads_disk_size_bytes",
    }


def test_the_exported_names_carry_prometheus_suffixes():
    known = exported_metrics()
    assert {"shop_http_requests_total", "shop_payments_total", "shop_db_pool_connections_in_use"} <= known
    assert {f"shop_http_request_duration_seconds_{s}" for s in ("bucket", "sum", "count")} <= known
    assert "shop_http_requests" not in known and "shop_http_request_duration_seconds" not in known


def test_a_misspelt_metric_name_is_caught():
    known = exported_metrics()
    assert unknown_metrics('rate(shop_http_request_total{status="5xx"}[5m])', known) == {"shop_http_request_total"}
    assert unknown_metrics("shop_ready == 0 and on() shop_queue_jobs > 1", known) == set()


def test_every_metric_an_alert_uses_is_one_the_shop_exports():
    known = exported_metrics()
    unknown = {
        rule["alert"]: found
        for rule in alert_rules()
        if (found := unknown_metrics(rule["expr"] + " " + " ".join(rule.get("annotations", {}).values()), known))
    }
    assert not unknown, f"alerts.yml names metrics the shop does not export: {unknown}"


def test_every_metric_a_dashboard_panel_queries_is_one_the_shop_exports():
    known = exported_metrics()
    queries = dashboard_queries()
    assert queries
    unknown = {where: found for where, expr in queries if (found := unknown_metrics(expr, known))}
    assert not unknown, f"the dashboard queries metrics the shop does not export: {unknown}"


# -- what an alert says ------------------------------------------------------------------------------------------
def test_every_alert_waits_says_how_urgent_it_is_and_what_to_look_at():
    rules = alert_rules()
    assert len(rules) == len({rule["alert"] for rule in rules}), "two alerts share a name"
    for rule in rules:
        assert rule.get("for"), f"{rule['alert']} has no `for:`"
        assert rule.get("labels", {}).get("severity") in {"page", "ticket"}, rule["alert"]
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]
        assert "docs/observability.md" in annotations["description"], rule["alert"]


def test_every_alert_has_a_firing_case_and_a_quiet_case_in_its_unit_tests():
    cases = [case for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"no test makes {rule['alert']} fire"
        assert any(not case["exp_alerts"] for case in mine), f"no test shows {rule['alert']} staying quiet"


def test_the_dashboard_is_the_shop_overview_on_a_chosen_prometheus():
    dashboard = json.loads(DASHBOARD.read_text())
    assert (dashboard["uid"], dashboard["title"], dashboard["schemaVersion"]) == ("shop-overview", "The shop", 39)
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for panel in dashboard_panels():
        if panel.get("targets"):
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
