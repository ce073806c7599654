"""deploy/prometheus and deploy/grafana: a config promtool accepts, and a dashboard that charts
only metrics this code base really exports (django-prometheus's and Flower's)."""

import json
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import REGISTRY

from tests.deploy.procfile import ROOT

DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
PROMQL_FUNCTIONS = {"sum", "rate", "by", "histogram_quantile", "clamp_min", "le"}


def exported_metric_names() -> set[str]:
    """Series names (with _total, _bucket, …) registered by the API's and Flower's metrics."""
    from django_prometheus.middleware import Metrics
    from flower.events import get_prometheus_metrics

    Metrics.get_instance()
    get_prometheus_metrics()
    return set().union(*REGISTRY._collector_to_names.values())


def dashboard_exprs() -> list[str]:
    exprs = []
    for path in DASHBOARDS.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            exprs += [target["expr"] for target in panel.get("targets", [])]
    return exprs


def test_dashboard_charts_only_exported_metrics():
    exported = exported_metric_names()
    exprs = dashboard_exprs()
    assert exprs
    for expr in exprs:
        bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", expr)
        for name in set(re.findall(r"[a-z_][a-z0-9_]*", bare)) - PROMQL_FUNCTIONS:
            if name.startswith(("django_", "flower_")):
                assert name in exported, f"{name} is not exported: {expr}"


def test_dashboards_are_provisioned_from_the_mounted_folder():
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "leadflow.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    for path in DASHBOARDS.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            if "datasource" in panel:
                assert panel["datasource"]["uid"] == uid, panel["title"]


def test_prometheus_config_passes_promtool():
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    result = subprocess.run(
        [
            promtool,
            "check",
            "config",
            "--syntax-only",
            str(ROOT / "deploy/prometheus/prometheus.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
