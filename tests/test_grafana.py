"""deploy/grafana: the dashboard is valid JSON whose panels have unique ids and fit the grid, every
PromQL expression in it parses (promtool) and names only metrics the orchestrator exports, it
covers what an operator watches, and Compose provisions it with its data source.

Files only: no Grafana, Prometheus, Kafka or PostgreSQL is started.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promql import (
    TARGET_LABELS,
    assert_promql_parses,
    known_metric_labels,
    known_metric_names,
    label_names,
    metric_names,
)

REPO = Path(__file__).resolve().parents[1]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "orchestrator.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
COMPOSE = REPO / "deploy" / "docker-compose.yml"

# Grafana fills these in before a query reaches Prometheus; any valid value will do for parsing.
_GRAFANA_DURATIONS = re.compile(r"\$__(?:rate_interval|interval|range)\b")
_TEMPLATE_VARIABLE = re.compile(r"\$\{\w+\}|\$\w+")

#: Series the dashboard must show: the issue's list (orders through each stage, lag, latency
#: percentiles, decisions, splits, exceptions by kind and resolution, dead letters, stock-outs),
#: readiness, the promise API, and a shadow policy and the look-ahead prices against the active policy.
REQUIRED_METRICS = {
    "orchestrator_events_consumed_total",
    "orchestrator_consumer_lag_messages",
    "orchestrator_event_handling_seconds_bucket",
    "orchestrator_batch_commit_seconds_bucket",
    "orchestrator_order_release_latency_seconds_bucket",
    "orchestrator_decisions_total",
    "orchestrator_split_decisions_total",
    "orchestrator_exceptions_opened_total",
    "orchestrator_exceptions_resolved_total",
    "orchestrator_stockout_lines_total",
    "orchestrator_dead_letters_total",
    "orchestrator_stage_ready",
    "orchestrator_promise_requests_total",
    "orchestrator_promise_seconds_bucket",
    "orchestrator_shadow_shipping_cost_total",
    "orchestrator_shadow_split_decisions_total",
    "orchestrator_shadow_promise_hits_total",
    "orchestrator_shadow_differing_decisions_total",
    "orchestrator_shadow_capacity_breaches_total",
    "orchestrator_lookahead_prices_computed_timestamp_seconds",
    "orchestrator_lookahead_refreshes_total",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        pytest.fail(f"{DASHBOARD} is not valid JSON: {exc}")
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every PromQL expression of the dashboard, named by panel and query, as Grafana sends it."""
    out: dict[str, str] = {}
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            out[f"panel {panel['id']} ({panel['title']}) query {target['refId']}"] = target["expr"]
    return out


def _as_sent(expr: str) -> str:
    return _TEMPLATE_VARIABLE.sub(".*", _GRAFANA_DURATIONS.sub("5m", expr))


def test_panel_ids_are_unique_and_every_panel_fits_the_grid(dashboard: dict[str, Any]) -> None:
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    occupied: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel[
            "title"
        ]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = occupied.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']!r} overlaps {other!r}"


def test_every_query_panel_has_titled_unique_queries(dashboard: dict[str, Any]) -> None:
    for panel in _panels(dashboard):
        assert panel.get("title"), f"panel {panel['id']} has no title"
        if panel["type"] == "row":
            continue
        targets = panel.get("targets", [])
        assert targets, f"{panel['title']!r} has no query"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(t.get("expr", "").strip() for t in targets), panel["title"]
        if panel["type"] in ("stat", "bargauge"):
            # These show one value per series: a range query would only cost more.
            assert all(t.get("instant") for t in targets), panel["title"]


def test_every_expression_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    queries = {name: _as_sent(expr) for name, expr in _queries(dashboard).items()}
    assert len(queries) > 20
    assert_promql_parses(queries, tmp_path)


def test_every_metric_is_one_the_orchestrator_exports(dashboard: dict[str, Any]) -> None:
    known = known_metric_names()
    used: set[str] = set()
    for name, expr in _queries(dashboard).items():
        names = metric_names(expr)
        assert names, f"{name} selects no metric: {expr}"
        unknown = names - known
        assert not unknown, f"{name} names metrics nothing exports: {sorted(unknown)}"
        used |= names
    # The stage variable lists the stages that report readiness.
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
            assert match, variable["definition"]
            assert match.group(1) in known
    missing = REQUIRED_METRICS - used
    assert not missing, f"the dashboard shows nothing of {sorted(missing)}"


def test_every_label_is_one_the_metrics_carry(dashboard: dict[str, Any]) -> None:
    """A label a metric lacks matches nothing, or groups everything into one unnamed series."""
    labels = known_metric_labels()
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            carried = set(TARGET_LABELS)
            for metric in metric_names(target["expr"]):
                carried |= labels[metric]
            name = f"{panel['title']!r} query {target['refId']}"
            unknown = label_names(target["expr"]) - carried
            assert not unknown, f"{name} uses labels its metrics lack: {sorted(unknown)}"
            shown = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert shown <= carried, (
                f"{name} names labels its metrics lack in its legend: {sorted(shown - carried)}"
            )


def test_panels_query_the_provisioned_prometheus(dashboard: dict[str, Any]) -> None:
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert len(datasources) == 1
    source = datasources[0]
    assert source["type"] == "prometheus"
    # Compose's Prometheus service, on its port.
    assert source["url"] == "http://prometheus:9090"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == source["uid"]
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        refs = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
        assert all(r == {"type": "prometheus", "uid": "${datasource}"} for r in refs), panel["title"]


def test_compose_provisions_grafana_with_the_dashboard() -> None:
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = (COMPOSE.parent / source).resolve()
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    providers = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert [p["type"] for p in providers] == ["file"]
    dashboards_path = providers[0]["options"]["path"]
    assert mounts[dashboards_path] == DASHBOARD.parent
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_path}/{DASHBOARD.name}"
