"""Redis with Sentinel (redis-ha): 3 anti-affine nodes in prod, 1 writable node in dev."""

from __future__ import annotations

from typing import Any

import pytest

from components.platform.redis import RedisSentinel
from tenancy import versions
from tenancy.builders import selfservice
from tenancy.builders.redis import AUTH_KEY, POD_LABELS, render_redis_values
from tenancy.render.runtime import DeclaredResource, StackCapture, capture_program
from tenancy.render.schema import declared_schema_problems
from tenancy.spec.platform import PlatformConfig
from tenancy.spec.quantity import parse_quantity
from tests.chart_keys import load_all
from tests.platform.support import dev_config, is_secret, prod_config, strings

RELEASE = "kubernetes:helm.sh/v3:Release"


def capture(config: PlatformConfig) -> StackCapture:
    def program() -> dict[str, Any]:
        redis = RedisSentinel("redis", config=config)
        return {
            "sentinelHosts": redis.sentinel_hosts,
            "masterGroupName": redis.master_group_name,
            "password": redis.password,
            "namespace": redis.namespace,
        }

    return capture_program(program, stack=config.environment)


@pytest.fixture(scope="module")
def dev() -> StackCapture:
    return capture(dev_config())


@pytest.fixture(scope="module")
def prod() -> StackCapture:
    return capture(prod_config())


def values_of(captured: StackCapture) -> dict[str, Any]:
    [release] = captured.of_type(RELEASE)
    values: dict[str, Any] = release.inputs["values"]
    return values


def auth_secret(captured: StackCapture) -> DeclaredResource:
    [secret] = captured.of_type("kubernetes:core/v1:Secret")
    return secret


def test_prod_redis_runs_three_nodes_one_per_host_with_quorum_two_and_a_pdb() -> None:
    values = render_redis_values(prod_config())
    assert values["replicas"] == 3
    assert values["hardAntiAffinity"] is True
    assert values["sentinel"]["quorum"] == 2
    assert values["podDisruptionBudget"] == {"maxUnavailable": 1}
    # The chart's min-replicas-to-write (1) stays: a master without a replica refuses writes.
    assert "min-replicas-to-write" not in values["redis"]["config"]


def test_dev_redis_is_one_node_that_accepts_writes() -> None:
    values = render_redis_values(dev_config())
    assert values["replicas"] == 1
    assert values["redis"]["config"]["min-replicas-to-write"] == 0
    assert values["sentinel"]["quorum"] == 1
    assert values["hardAntiAffinity"] is False
    assert "podDisruptionBudget" not in values


@pytest.mark.parametrize("config", [dev_config(), prod_config()], ids=["dev", "prod"])
def test_redis_appends_every_write_to_a_persistent_log(config: PlatformConfig) -> None:
    values = render_redis_values(config)
    assert values["redis"]["config"]["appendonly"] == "yes"  # Redis reads "yes", not a YAML true
    assert values["persistentVolume"]["storageClass"] == config.storage_class
    assert "enabled" not in values["persistentVolume"]  # on by chart default


def _redis_bytes(text: str) -> int:
    """A redis.conf memory setting in bytes ("1mb" is 1024*1024 in Redis, "1m" 1000*1000)."""
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "k": 1000, "m": 1000**2, "g": 1000**3}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(text.removesuffix(unit)) * factor
    return int(text)


@pytest.mark.parametrize("config", [dev_config(), prod_config()], ids=["dev", "prod"])
def test_redis_refuses_writes_when_full_instead_of_being_killed_or_evicting(config: PlatformConfig) -> None:
    values = render_redis_values(config)
    redis_config = values["redis"]["config"]
    limit = parse_quantity(values["redis"]["resources"]["limits"]["memory"])
    maxmemory = _redis_bytes(redis_config["maxmemory"])
    # "0" (the chart's default) means unlimited: Redis would grow into the OOM kill.
    assert 0 < maxmemory <= limit * 3 / 4
    # The queue must never lose a job to eviction: a full Redis answers writes with an error.
    assert redis_config["maxmemory-policy"] == "noeviction"


@pytest.mark.parametrize("config", [dev_config(), prod_config()], ids=["dev", "prod"])
def test_every_redis_container_has_requests_and_limits(config: PlatformConfig) -> None:
    values = render_redis_values(config)
    blocks = [
        values["redis"]["resources"],
        values["sentinel"]["resources"],
        values["splitBrainDetection"]["resources"],
        values["init"]["resources"],
    ]
    for block in blocks:
        assert set(block) == {"requests", "limits"}
        assert set(block["limits"]) == {"cpu", "memory"}
    # The only other containers the chart can add stay off by its defaults.
    assert "exporter" not in values and "haproxy" not in values


def test_redis_pods_run_restricted() -> None:
    values = render_redis_values(prod_config())
    assert values["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    # Everything that would break Pod Security "restricted" is off by chart default, and the chart's
    # container contexts (non-root, no escalation, drop ALL, RuntimeDefault) are kept as they are.
    for key in ("hostPath", "sysctlImage", "restore", "containerSecurityContext"):
        assert key not in values


def test_password_is_generated_and_passed_by_secret_never_as_values(prod: StackCapture) -> None:
    [generated] = prod.of_type("random:index/randomPassword:RandomPassword")
    assert generated.name == "redis-password"
    secret = auth_secret(prod)
    assert (secret.inputs["metadata"]["name"], secret.inputs["metadata"]["namespace"]) == (
        "redis-auth",
        "redis",
    )
    assert is_secret(secret, "stringData", AUTH_KEY)

    values = values_of(prod)
    assert (values["auth"], values["existingSecret"]) == (True, "redis-auth")
    # Sentinel asks for the same password, from the same Secret key.
    sentinel = values["sentinel"]
    assert (sentinel["auth"], sentinel["existingSecret"], sentinel["authKey"]) == (
        True,
        "redis-auth",
        AUTH_KEY,
    )
    assert "redisPassword" not in values and "password" not in sentinel
    assert secret.inputs["stringData"][AUTH_KEY] not in set(strings(values))


def test_password_is_a_secret_output(prod: StackCapture) -> None:
    assert "password" in prod.secret_outputs
    assert prod.outputs["password"] == auth_secret(prod).inputs["stringData"][AUTH_KEY]


def test_clients_find_the_master_through_every_sentinel(prod: StackCapture, dev: StackCapture) -> None:
    assert prod.outputs["sentinelHosts"] == [
        f"redis-ha-announce-{i}.redis.svc.cluster.local:26379" for i in range(3)
    ]
    assert dev.outputs["sentinelHosts"] == ["redis-ha-announce-0.redis.svc.cluster.local:26379"]
    assert prod.outputs["masterGroupName"] == "mymaster"
    assert prod.outputs["namespace"] == "redis"


def test_only_the_self_service_namespace_may_reach_redis_and_sentinel(prod: StackCapture) -> None:
    [namespace] = prod.of_type("kubernetes:core/v1:Namespace")
    assert namespace.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    policies = {
        r.inputs["metadata"]["name"]: r.inputs["spec"]
        for r in prod.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    }
    spec = policies["allow-tenancy-system-to-redis"]
    assert spec["podSelector"] == {"matchLabels": POD_LABELS}
    [rule] = spec["ingress"]
    # The self-service pods (API and workers) of that namespace, not anything else run there.
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tenancy-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "selfservice"}},
        }
    ]
    assert {p["port"] for p in rule["ports"]} == {6379, 26379}
    # Both of its roles carry that label: the API (Redis queue, keys, limits) and the workers.
    for role in ("api", "worker"):
        assert selfservice.labels(role).items() >= {"app.kubernetes.io/name": "selfservice"}.items()
    ingress_allows = [name for name, s in policies.items() if "ingress" in s]
    assert sorted(ingress_allows) == ["allow-same-namespace", "allow-tenancy-system-to-redis"]


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_every_built_in_object_passes_the_schema(
    environment: str, dev: StackCapture, prod: StackCapture
) -> None:
    captured = {"dev": dev, "prod": prod}[environment]
    assert declared_schema_problems(captured.kubernetes_objects()) == []


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_chart_key_file_covers_every_value(environment: str, dev: StackCapture, prod: StackCapture) -> None:
    captured = {"dev": dev, "prod": prod}[environment]
    keys = load_all()["redis-ha"]
    [release] = captured.of_type(RELEASE)
    assert keys.version == release.inputs["version"]
    assert keys.unknown(release.inputs["values"]) == []


def test_redis_ha_is_pinned(prod: StackCapture) -> None:
    [release] = prod.of_type(RELEASE)
    assert release.inputs["chart"] == versions.REDIS_HA.chart
    assert release.inputs["version"] == versions.REDIS_HA.version
    assert release.inputs["repositoryOpts"]["repo"] == versions.REDIS_HA.repo
    assert release.inputs["namespace"] == "redis"
    assert set(release.depends_on) >= {"redis-namespace", "redis-auth"}
