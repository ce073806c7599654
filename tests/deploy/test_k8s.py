"""deploy/k8s: what kustomize builds is valid Kubernetes (kubernetes-validate, strict), and it is
wired to this code base: the Procfile's commands, real health endpoints, real queue names."""

import shutil
import subprocess
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from django.conf import settings
from django.urls import Resolver404, resolve

from apps.health.operator import PUBLIC_URLCONF
from leadflow.queues import POOLS, TIERS
from tests.deploy.procfile import ROOT, command_shape, procfile, procfile_env

K8S_DIR = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32"
KEDA_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}


def _documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    """`kubectl kustomize` output when kubectl is there; else the listed files, which use no
    patches, so they are the same resources less the namespace and common labels."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        built = subprocess.run(
            [kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=120
        )
        assert built.returncode == 0, built.stderr
        return _documents(built.stdout)
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    return [
        doc
        for resource in kustomization["resources"]
        for doc in _documents((K8S_DIR / resource).read_text())
    ]


def _by_kind(manifests: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in manifests if doc["kind"] == kind}


def _container(deployment: dict) -> dict:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_every_manifest_file_is_in_the_kustomization():
    listed = set(yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())["resources"])
    files = {path.name for path in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert files == listed


def test_manifests_are_valid_kubernetes_resources(manifests):
    checked = 0
    for doc in manifests:
        if (doc["apiVersion"], doc["kind"]) in KEDA_KINDS:
            continue  # a CRD: checked field by field below
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 20


def test_validation_rejects_a_misspelt_field(manifests):
    deployment = _by_kind(manifests, "Deployment")["api"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_namespace_is_set_everywhere(manifests):
    if not shutil.which("kubectl"):
        pytest.skip("kubectl not installed: the namespace is applied by kustomize")
    for doc in manifests:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "leadflow", doc["metadata"]["name"]


def test_one_deployment_per_process_with_the_procfile_command(manifests):
    deployments = _by_kind(manifests, "Deployment")
    for name, command in procfile().items():
        deployment = deployments["api" if name == "api" else name]
        assert command_shape(_container(deployment)["command"]) == command_shape(command), name


def test_command_variables_come_from_the_config_map(manifests):
    config = _by_kind(manifests, "ConfigMap")["leadflow-config"]["data"]
    for name, deployment in _by_kind(manifests, "Deployment").items():
        for arg in _container(deployment).get("command", []):
            if arg.startswith("$("):
                assert arg[2:-1] in config, f"{name}: {arg} is not in the ConfigMap"


def test_api_probes_use_the_health_endpoints(manifests):
    api = _container(_by_kind(manifests, "Deployment")["api"])
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        # on the public listener, where the kubelet sends them (apps/health/operator.py)
        path = api[probe]["httpGet"]["path"]
        assert resolve(path, urlconf=PUBLIC_URLCONF).url_name in {"healthz", "readyz"}
        assert api[probe]["httpGet"]["port"] == "http"
    # the readiness probe outlasts the checks' own timeouts (Redis, then PostgreSQL, 2 s each)
    assert api["readinessProbe"]["timeoutSeconds"] > 4


def test_api_allows_its_pod_ip_as_host(manifests):
    env = {
        item["name"]: item for item in _container(_by_kind(manifests, "Deployment")["api"])["env"]
    }
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["DJANGO_ALLOWED_HOSTS"]["value"] == "$(LEADFLOW_PUBLIC_HOSTS),$(POD_IP)"


@pytest.mark.parametrize("pool", POOLS)
def test_pool_probes_ping_their_own_worker(manifests, pool):
    worker = _container(_by_kind(manifests, "Deployment")[f"pool-{pool}"])
    for probe in ("startupProbe", "livenessProbe"):
        assert worker[probe]["exec"]["command"] == [
            "python",
            "-m",
            "apps.health.worker_probe",
            pool,
        ]
    # the probe's node name is the one the command gives the worker
    assert worker["command"][worker["command"].index("-n") + 1] == f"pool-{pool}@%h"


@pytest.mark.parametrize(
    ("pool", "cpu", "memory_request", "memory_limit"),
    [("a", "200m", "512Mi", "512Mi"), ("b", "1", "2Gi", "4Gi"), ("c", "500m", "1Gi", "1Gi")],
)
def test_pools_have_the_specified_resources(manifests, pool, cpu, memory_request, memory_limit):
    resources = _container(_by_kind(manifests, "Deployment")[f"pool-{pool}"])["resources"]
    assert resources["requests"] == {"cpu": cpu, "memory": memory_request}
    assert resources["limits"] == {"cpu": cpu, "memory": memory_limit}


def test_pool_a_hands_back_its_batch_before_the_grace_period_ends(manifests):
    deployment = _by_kind(manifests, "Deployment")["pool-a"]
    env = {item["name"]: item.get("value") for item in _container(deployment)["env"]}
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert env["REMAP_SIGTERM"] == "SIGQUIT"
    assert float(env["CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT"]) + 5 <= grace


@pytest.mark.parametrize("pool", ["b", "c"])
def test_thread_pools_grace_period_outlasts_the_hard_time_limit(manifests, pool, settings):
    spec = _by_kind(manifests, "Deployment")[f"pool-{pool}"]["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > settings.CELERY_TASK_TIME_LIMIT


def test_containers_run_unprivileged_with_limits(manifests):
    workloads = [*_by_kind(manifests, "Deployment").values(), *_by_kind(manifests, "Job").values()]
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["resources"]["limits"]["memory"]


def test_control_runs_two_replicas_and_keeps_one_through_disruptions(manifests):
    assert _by_kind(manifests, "Deployment")["control"]["spec"]["replicas"] == 2
    pdb = _by_kind(manifests, "PodDisruptionBudget")["control"]
    assert pdb["spec"]["minAvailable"] == 1


def test_disruption_budgets_select_real_deployments(manifests):
    labels = [
        deployment["spec"]["template"]["metadata"]["labels"]
        for deployment in _by_kind(manifests, "Deployment").values()
    ]
    pdbs = _by_kind(manifests, "PodDisruptionBudget")
    assert {"api", "pool-a", "pool-b", "pool-c", "control", "pgbouncer"} <= set(pdbs)
    for name, pdb in pdbs.items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(selector.items() <= label.items() for label in labels), name


def test_api_has_an_hpa_on_its_deployment(manifests):
    hpa = _by_kind(manifests, "HorizontalPodAutoscaler")["api"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "api",
    }


def test_apps_reach_postgres_through_pgbouncer(manifests):
    secret = _by_kind(manifests, "Secret")["leadflow-secrets"]["stringData"]
    assert urlsplit(secret["DATABASE_URL"]).hostname == "pgbouncer"
    assert "pgbouncer" in _by_kind(manifests, "Service")
    assert (
        _by_kind(manifests, "ConfigMap")["leadflow-config"]["data"]["DATABASE_PGBOUNCER"] == "true"
    )
    job = _container({"spec": _by_kind(manifests, "Job")["leadflow-migrate"]["spec"]})
    env = {item["name"]: item for item in job["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "DATABASE_DIRECT_URL"


# --- KEDA: one ScaledObject per pool, on that pool's own backlog ---


@pytest.mark.parametrize("pool", POOLS)
def test_each_pool_has_a_scaled_object_on_its_deployment(manifests, pool):
    scaled = _by_kind(manifests, "ScaledObject")[f"pool-{pool}"]["spec"]
    assert scaled["scaleTargetRef"]["name"] in _by_kind(manifests, "Deployment")
    assert scaled["scaleTargetRef"]["name"] == f"pool-{pool}"
    assert 1 <= scaled["minReplicaCount"] < scaled["maxReplicaCount"]
    assert scaled["triggers"]


@pytest.mark.parametrize("pool", POOLS)
def test_each_pool_scales_on_the_controllers_backlog_endpoint(manifests, pool):
    for trigger in _by_kind(manifests, "ScaledObject")[f"pool-{pool}"]["spec"]["triggers"]:
        assert trigger["type"] == "metrics-api"
        metadata = trigger["metadata"]
        url = urlsplit(metadata["url"])
        # the operator listener's Service: the figures are not on the public port
        assert url.hostname == "api-operator.leadflow.svc.cluster.local"
        assert url.port == settings.OPERATOR_PORT
        assert resolve(url.path).url_name == "scaling-backlog"
        with pytest.raises(Resolver404):
            resolve(url.path, urlconf=PUBLIC_URLCONF)
        assert metadata["format"] == "json"
        assert metadata["valueLocation"] in {
            f"{prefix}{pool}.{tier}" for tier in TIERS for prefix in ("", "forecast.")
        }
        assert float(metadata["targetValue"]) > 0
        # KEDA's request carries that Host: the API must accept it
        config = _by_kind(manifests, "ConfigMap")["leadflow-config"]["data"]
        assert url.hostname in config["LEADFLOW_PUBLIC_HOSTS"].split(",")


@pytest.mark.parametrize("pool", POOLS)
def test_each_pool_scales_on_the_larger_of_its_current_and_forecast_need_as_the_controller_does(
    manifests, pool
):
    """KEDA is given the per-replica targets and bounds the controller computes its published
    replicas with (settings.AUTOSCALING), for the current figure and the forecast alike."""
    scaled = _by_kind(manifests, "ScaledObject")[f"pool-{pool}"]["spec"]
    expected = settings.AUTOSCALING[pool]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (
        expected["min_replicas"],
        expected["max_replicas"],
    )
    targets = {
        t["metadata"]["valueLocation"]: float(t["metadata"]["targetValue"])
        for t in scaled["triggers"]
    }
    for tier, per_replica in expected["per_replica"].items():
        assert targets[f"{pool}.{tier}"] == per_replica
        assert targets[f"forecast.{pool}.{tier}"] == per_replica
    assert len(targets) == 2 * len(expected["per_replica"])


@pytest.mark.parametrize("process", ["control", "pool-a", "pool-b", "pool-c"])
def test_metrics_ports_are_annotated_for_prometheus(manifests, process):
    deployment = _by_kind(manifests, "Deployment")[process]
    expected = (
        settings.CONTROL_METRICS_PORT
        if process == "control"
        else settings.POOL_METRICS_PORTS[process[-1]]
    )
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == expected
    ports = {port["name"]: port["containerPort"] for port in _container(deployment)["ports"]}
    assert ports["metrics"] == expected


def test_metrics_listen_on_the_pod_and_pool_a_adds_up_its_children(manifests):
    config = _by_kind(manifests, "ConfigMap")["leadflow-config"]["data"]
    assert config["LEADFLOW_METRICS_ADDRESS"] == "0.0.0.0"
    worker = _container(_by_kind(manifests, "Deployment")["pool-a"])
    env = {item["name"]: item.get("value") for item in worker["env"]}
    assert set(procfile_env()["pool-a"]) <= set(env)
    # in the /tmp emptyDir: the root filesystem is read-only
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")


def test_processes_refuse_a_redis_that_would_lose_leads(manifests):
    """The ConfigMap keeps the strict Redis check (leadflow/redis_checks.py) and says which
    appendfsync the server runs with ("" leaves it unchecked)."""
    config = _by_kind(manifests, "ConfigMap")["leadflow-config"]["data"]
    assert config["LEADFLOW_REDIS_CHECKS"] == "strict"
    assert config["LEADFLOW_REDIS_APPENDFSYNC"] in ("", "always", "everysec")


@pytest.mark.parametrize("pool", ["b", "c"])
def test_thread_pools_recycle_under_their_memory_limit(manifests, pool):
    """Threads: the worker restarts itself above LEADFLOW_WORKER_MAX_MEMORY_KB, which must sit
    below the container's limit (else the OOM killer comes first, mid-batch)."""
    worker = _container(_by_kind(manifests, "Deployment")[f"pool-{pool}"])
    env = {item["name"]: item.get("value") for item in worker["env"]}
    limit = worker["resources"]["limits"]["memory"]
    limit_kb = int(limit[:-2]) * {"Mi": 1024, "Gi": 1024 * 1024}[limit[-2:]]
    assert 0 < int(env["LEADFLOW_WORKER_MAX_MEMORY_KB"]) <= 0.8 * limit_kb
