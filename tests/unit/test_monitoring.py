"""The monitoring profile's files (issue 16): every alert and every dashboard panel asks for
metrics the services export, and Prometheus and Grafana are wired as compose mounts them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import prometheus_client
import yaml

from tests.services import build_app

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
NAME = re.compile(r"\bcaseflow_[a-z_]+")


def exported() -> set[str]:
    """Every metric name the three services expose (their modules registered)."""
    for service in ("intake", "processing", "notify"):
        build_app(service, "sqlite+aiosqlite:///never-opened.db")
    names: set[str] = set()
    for family in prometheus_client.REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{s}" for s in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return {n for n in names if n.startswith("caseflow_")}


def test_every_alert_is_complete_and_asks_for_exported_metrics() -> None:
    known = exported()
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text(encoding="utf-8"))
    (group,) = rules["groups"]
    alerts = {rule["alert"]: rule for rule in group["rules"]}
    assert len(alerts) >= 8
    for name, rule in alerts.items():
        assert rule["for"] and rule["labels"]["severity"] in ("page", "warn"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert set(NAME.findall(rule["expr"])) <= known, (name, rule["expr"])
    for gauge in (
        "caseflow_events_unpublished",
        "caseflow_consumer_pending_messages",
        "caseflow_projection_lag_events",
        "caseflow_dead_letters",
        "caseflow_timers_due",
        "caseflow_notify_deliveries",
        "caseflow_backlog_sampled_timestamp_seconds",
    ):
        assert any(gauge in rule["expr"] for rule in alerts.values()), f"no alert on {gauge}"


def test_every_dashboard_panel_asks_for_exported_metrics() -> None:
    known = exported()
    dashboard: dict[str, Any] = json.loads(
        (MONITORING / "grafana" / "dashboards" / "caseflow.json").read_text(encoding="utf-8")
    )
    datasource = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert len(titles) == len(set(titles)) >= 10
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        (target,) = panel["targets"]
        used = set(NAME.findall(target["expr"]))
        assert used and used <= known, (panel["title"], target["expr"])


def test_prometheus_scrapes_the_services_as_compose_runs_them() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    prometheus = yaml.safe_load((MONITORING / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = prometheus["scrape_configs"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/metrics-token"
    assert "metrics-token" in compose["services"]["prometheus"]["secrets"]
    targets = {c["labels"]["service"]: c["targets"][0] for c in job["static_configs"]}
    for service, target in targets.items():
        port = compose["services"][service]["environment"][f"CASEFLOW_{service.upper()}_PORT"]
        assert target == f"{service}:{port}"
    mounted = {c["target"]: c["source"] for c in compose["services"]["prometheus"]["configs"]}
    assert prometheus["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert mounted["/etc/prometheus/alerts.yml"] == "prometheus-alerts"
    for name in ("prometheus", "grafana"):
        for config in compose["services"][name]["configs"]:
            assert (ROOT / compose["configs"][config["source"]]["file"]).is_file(), config
        assert compose["services"][name]["profiles"] == ["monitoring"]
        assert re.search(r":v?\d+\.\d+\.\d+$", compose["services"][name]["image"]), "pinned"
