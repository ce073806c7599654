"""deploy/k8s, hardened: the operator listener kept off the public Service, every container
non-root on a read-only root filesystem with no service account token, secrets where only their
users read them, Redis with credentials, and NetworkPolicies that admit only LeadFlow's pods to
Redis and PgBouncer, only Prometheus and KEDA to the operator endpoints, and keep the pools that
call tenants' URLs off private addresses."""

import ipaddress
from urllib.parse import urlsplit

from django.conf import settings

from tests.deploy.test_k8s import _by_kind, _container, manifests  # noqa: F401 - the fixture

LEADFLOW_PODS = {
    "leadflow-api",
    "leadflow-pool-a",
    "leadflow-pool-b",
    "leadflow-pool-c",
    "leadflow-control",
    "leadflow-flower",
}


def _pods(manifests) -> dict[str, dict]:  # noqa: F811
    """name -> pod spec, of every Deployment and Job."""
    workloads = {**_by_kind(manifests, "Deployment"), **_by_kind(manifests, "Job")}
    return {name: workload["spec"]["template"]["spec"] for name, workload in workloads.items()}


def _labels(manifests) -> dict[str, str]:  # noqa: F811
    """Deployment/Job name -> its pods' app.kubernetes.io/name."""
    workloads = {**_by_kind(manifests, "Deployment"), **_by_kind(manifests, "Job")}
    return {
        name: workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        for name, workload in workloads.items()
    }


def _selected(selector: dict) -> set[str]:
    """The app.kubernetes.io/name values a podSelector selects (matchLabels / an In expression)."""
    names = set()
    if "app.kubernetes.io/name" in selector.get("matchLabels", {}):
        names.add(selector["matchLabels"]["app.kubernetes.io/name"])
    for expression in selector.get("matchExpressions", []):
        assert expression["key"] == "app.kubernetes.io/name" and expression["operator"] == "In"
        names |= set(expression["values"])
    return names


def _policies(manifests) -> dict[str, dict]:  # noqa: F811
    return {name: doc["spec"] for name, doc in _by_kind(manifests, "NetworkPolicy").items()}


# --- the operator listener ---


def test_api_binds_the_public_port_and_the_operator_listener(manifests):  # noqa: F811
    api = _container(_by_kind(manifests, "Deployment")["api"])
    command = api["command"]
    binds = [command[i + 1] for i, arg in enumerate(command) if arg == "-b"]
    assert binds == ["0.0.0.0:8000", f"0.0.0.0:{settings.OPERATOR_PORT}"]
    ports = {port["name"]: port["containerPort"] for port in api["ports"]}
    assert ports == {"http": 8000, "operator": settings.OPERATOR_PORT}
    config = _by_kind(manifests, "ConfigMap")["leadflow-config"]["data"]
    assert int(config["LEADFLOW_OPERATOR_PORT"]) == settings.OPERATOR_PORT


def test_prometheus_scrapes_the_api_on_the_operator_listener(manifests):  # noqa: F811
    annotations = _by_kind(manifests, "Deployment")["api"]["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert int(annotations["prometheus.io/port"]) == settings.OPERATOR_PORT


def test_the_public_service_exposes_only_the_public_port(manifests):  # noqa: F811
    services = _by_kind(manifests, "Service")
    assert [port["targetPort"] for port in services["api"]["spec"]["ports"]] == ["http"]
    operator = services["api-operator"]["spec"]
    assert operator.get("type", "ClusterIP") == "ClusterIP"
    assert [port["targetPort"] for port in operator["ports"]] == ["operator"]


# --- containers ---


def test_every_pod_runs_non_root_read_only_without_a_service_account_token(manifests):  # noqa: F811
    for name, pod in _pods(manifests).items():
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            # whatever a process writes goes to an emptyDir
            mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, name


# --- secrets ---


def test_redis_is_reached_with_credentials_from_the_secret(manifests):  # noqa: F811
    config = _by_kind(manifests, "ConfigMap")["leadflow-config"]["data"]
    assert "REDIS_URL" not in config
    secret = _by_kind(manifests, "Secret")["leadflow-secrets"]["stringData"]
    url = urlsplit(secret["REDIS_URL"])
    assert url.password, "REDIS_URL carries the password (or an ACL user's)"


def test_only_pgbouncer_and_the_migrate_job_hold_postgres_credentials(manifests):  # noqa: F811
    secrets = _by_kind(manifests, "Secret")
    assert "DATABASE_DIRECT_URL" not in secrets["leadflow-secrets"]["stringData"]
    assert "DATABASE_DIRECT_URL" in secrets["leadflow-database-direct"]["stringData"]
    holders = set()
    for name, pod in _pods(manifests).items():
        for container in pod["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("name") == "leadflow-database-direct":
                    holders.add(name)
            for source in container.get("envFrom", []):
                assert source.get("secretRef", {}).get("name") != "leadflow-database-direct"
    assert holders == {"pgbouncer", "leadflow-migrate"}


def test_flower_credentials_come_from_the_secret(manifests):  # noqa: F811
    assert "FLOWER_BASIC_AUTH" in _by_kind(manifests, "Secret")["leadflow-secrets"]["stringData"]
    assert "FLOWER_BASIC_AUTH" not in _by_kind(manifests, "ConfigMap")["leadflow-config"]["data"]


# --- network policies ---


def test_every_pod_refuses_connections_no_policy_admits(manifests):  # noqa: F811
    deny = _policies(manifests)["default-deny-ingress"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"]
    assert not deny.get("ingress")


def test_policies_select_real_pods(manifests):  # noqa: F811
    real = set(_labels(manifests).values()) | {"redis"}
    for name, policy in _policies(manifests).items():
        assert _selected(policy["podSelector"]) <= real, name
        for rule in policy.get("ingress", []) + policy.get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if "podSelector" in peer:
                    assert _selected(peer["podSelector"]) <= real, name


def test_only_leadflow_pods_reach_redis_and_pgbouncer(manifests):  # noqa: F811
    policies = _policies(manifests)
    for name, target in (("redis-from-leadflow", "redis"), ("pgbouncer-from-leadflow", None)):
        policy = policies[name]
        target = target or "leadflow-pgbouncer"
        assert _selected(policy["podSelector"]) == {target}
        [rule] = policy["ingress"]
        [peer] = rule["from"]
        assert set(peer) == {"podSelector"}, "no namespace or address may reach it"
        assert _selected(peer["podSelector"]) <= LEADFLOW_PODS
    # and nothing else admits anyone to them
    for name, policy in policies.items():
        if name not in ("redis-from-leadflow", "pgbouncer-from-leadflow", "default-deny-ingress"):
            selected = _selected(policy["podSelector"])
            assert not selected & {"redis", "leadflow-pgbouncer"}, name


def test_the_operator_port_admits_only_prometheus_and_keda(manifests):  # noqa: F811
    policies = _policies(manifests)
    public = policies["api-public"]["ingress"]
    assert public == [{"ports": [{"port": "http"}]}]  # from anywhere, that port only
    [rule] = policies["api-operator"]["ingress"]
    assert rule["ports"] == [{"port": "operator"}]
    namespaces = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in rule["from"]
    }
    assert namespaces == {"monitoring", "keda"}


def test_pools_calling_tenants_urls_cannot_reach_private_addresses(manifests):  # noqa: F811
    policy = _policies(manifests)["outbound-pools-egress"]
    assert _selected(policy["podSelector"]) == {"leadflow-pool-b", "leadflow-pool-c"}
    assert policy["policyTypes"] == ["Egress"]
    blocks = [
        peer["ipBlock"]
        for rule in policy["egress"]
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]
    refused = ["169.254.169.254", "10.1.2.3", "172.20.0.1", "192.168.1.1", "127.0.0.1", "fd00::1"]
    for address in refused:
        assert not any(_admits(block, address) for block in blocks), address
    assert any(_admits(block, "93.184.216.34") for block in blocks)  # a public address


def _admits(block: dict, address: str) -> bool:
    ip = ipaddress.ip_address(address)
    network = ipaddress.ip_network(block["cidr"])
    if ip.version != network.version or ip not in network:
        return False
    return not any(ip in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
