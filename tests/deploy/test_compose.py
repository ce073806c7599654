"""docker-compose.yml: valid against the Compose specification, the Procfile's processes with the
Procfile's commands, health checks everywhere, the pools' resource limits, Redis durable."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from leadflow.queues import POOLS
from tests.deploy.procfile import ROOT, command_shape, procfile, procfile_env

COMPOSE_FILE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert exe, "check-jsonschema is a dev dependency (pyproject.toml)"
    return subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_is_valid_against_the_compose_specification():
    result = check_jsonschema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_rejects_an_invalid_file(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    healthcheck:\n", "    healthchek:\n"))
    assert check_jsonschema(broken).returncode != 0


def test_every_procfile_process_is_a_compose_service_with_the_same_command(compose):
    services = compose["services"]
    for name, command in procfile().items():
        assert name in services, f"the Procfile's {name} has no compose service"
        assert command_shape(services[name]["command"]) == command_shape(command), name


def test_procfile_environment_is_the_services_environment(compose):
    """A Procfile line's VAR=value (pool A's PROMETHEUS_MULTIPROC_DIR) is set in compose too."""
    services = compose["services"]
    for name, env in procfile_env().items():
        for variable in env:
            assert variable in services[name].get("environment", {}), f"{name}: {variable}"


def test_metrics_servers_listen_on_the_container_network(compose):
    assert compose["x-app"]["environment"]["LEADFLOW_METRICS_ADDRESS"] == "0.0.0.0"
    prometheus = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in prometheus


def test_long_running_services_have_health_checks(compose):
    services = compose["services"]
    for name in ("postgres", "redis", "api", "pool-a", "pool-b", "pool-c", "flower"):
        assert "healthcheck" in services[name], name
    for name in ("prometheus", "grafana"):
        assert "healthcheck" in services[name], name


def test_api_health_check_asks_for_readiness(compose):
    assert "/readyz" in " ".join(compose["services"]["api"]["healthcheck"]["test"])


@pytest.mark.parametrize("pool", ["a", "b", "c"])
def test_pool_health_check_pings_its_own_worker(compose, pool):
    test = compose["services"][f"pool-{pool}"]["healthcheck"]["test"]
    assert test == ["CMD", "python", "-m", "apps.health.worker_probe", pool]


@pytest.mark.parametrize(
    ("service", "cpus", "memory", "reserved"),
    [("pool-a", "0.2", "512M", None), ("pool-b", "1", "4G", "2G"), ("pool-c", "0.5", "1G", None)],
)
def test_pools_have_the_specified_resource_limits(compose, service, cpus, memory, reserved):
    resources = compose["services"][service]["deploy"]["resources"]
    assert resources["limits"] == {"cpus": cpus, "memory": memory}
    if reserved:
        assert resources["reservations"]["memory"] == reserved


def test_pool_a_memory_per_child_fits_its_container(compose):
    command = compose["services"]["pool-a"]["command"]
    per_child_kb = int(command.split("POOL_A_MAX_MEMORY_KB:-")[1].split("}")[0])
    concurrency = int(command.split("POOL_A_CONCURRENCY:-")[1].split("}")[0])
    assert per_child_kb * concurrency < 512 * 1024 * 0.75  # room for the parent process


def test_redis_keeps_accepted_leads(compose):
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    # fsync as chosen (README "Outages"), and the apps told, so they check the server has it
    fsync = "${LEADFLOW_REDIS_APPENDFSYNC:-everysec}"
    assert command[command.index("--appendfsync") + 1] == fsync
    app_env = compose["x-app"]["environment"]
    assert app_env["LEADFLOW_REDIS_APPENDFSYNC"] == "${LEADFLOW_REDIS_APPENDFSYNC:-}"
    assert app_env.get("LEADFLOW_REDIS_CHECKS", "strict") == "strict"


def test_stop_grace_periods_cover_each_process_shutdown(compose):
    services = compose["services"]
    assert services["api"]["stop_grace_period"] == "15s"  # gunicorn --graceful-timeout 10
    pool_a = services["pool-a"]
    assert pool_a["environment"]["REMAP_SIGTERM"] == "SIGQUIT"
    assert int(pool_a["environment"]["CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT"]) < 30
    assert pool_a["stop_grace_period"] == "30s"
    for name in ("pool-b", "pool-c"):  # threads: the hard time limit (300 s) bounds a batch
        assert "REMAP_SIGTERM" not in services[name].get("environment", {})
        assert services[name]["stop_grace_period"] == "310s"


def test_only_loopback_ports_are_published(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_grafana_and_prometheus_mounts_exist(compose):
    for name in ("prometheus", "grafana"):
        for volume in compose["services"][name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_scrapes_the_compose_services_that_serve_metrics(compose):
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets |= set(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            targets |= {f"{name}:{dns['port']}" for name in dns["names"]}
    ports = settings.POOL_METRICS_PORTS
    assert f"api:{settings.OPERATOR_PORT}" in targets  # the operator listener
    assert "api:8000" not in targets  # the public port serves no metrics
    assert {
        "flower:5555",
        f"control:{settings.CONTROL_METRICS_PORT}",
        *(f"pool-{pool}:{ports[pool]}" for pool in POOLS),
    } <= targets
    for name in ("control", *(f"pool-{pool}" for pool in POOLS)):
        assert targets & {f"{name}:{port}" for port in compose["services"][name]["expose"]}, name
    allowed_hosts = compose["x-app"]["environment"]["DJANGO_ALLOWED_HOSTS"]
    assert "api" in allowed_hosts.split(":-")[1].rstrip("}").split(",")


@pytest.mark.parametrize(("service", "limit_kb"), [("pool-b", 4 * 1024**2), ("pool-c", 1024**2)])
def test_thread_pools_recycle_under_their_memory_limit(compose, service, limit_kb):
    """Threads: the worker restarts itself above LEADFLOW_WORKER_MAX_MEMORY_KB (the knob's
    default), below the container's limit, so the OOM killer does not come first, mid-batch."""
    knob = compose["services"][service]["environment"]["LEADFLOW_WORKER_MAX_MEMORY_KB"]
    default_kb = int(knob.split(":-")[1].rstrip("}"))
    assert 0 < default_kb <= 0.8 * limit_kb
