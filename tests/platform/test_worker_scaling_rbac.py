"""What scaling really asks the Kubernetes API for, and that the workers may ask it only in tenant
namespaces: the real ``kubectl`` (as ``tenancy.automation.scaling.Kubectl`` runs it) talks to an API
server stand-in on 127.0.0.1 that records every request; each request is then checked against the
workers' rights in a tenant namespace and the ValidatingAdmissionPolicy's real CEL rules (evaluated
with cel-python)."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tenancy.automation.scaling import RELEASE_NAME, Kubectl, ScalingFailed
from tenancy.builders.selfservice import (
    WORKER_USER,
    worker_admission_policy,
    worker_cluster_role,
    worker_tenant_cluster_role,
)
from tests.platform.admission import Review, failed_validations, matched

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl on PATH")

# Discovery as a 1.3x API server answers it (legacy form; kubectl falls back to it when the aggregated
# form is not offered), for the kinds scaling touches.
RESOURCES = {
    "/api/v1": [
        ("persistentvolumeclaims", "PersistentVolumeClaim", True),
        ("pods", "Pod", True),
        ("namespaces", "Namespace", False),
    ],
    "/apis/apps/v1": [("statefulsets", "StatefulSet", True)],
}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


class Recorded:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.bodies: list[tuple[str, str, Any]] = []  # (method, path, JSON body) of writes


def _handler(recorded: Recorded) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            parts = urlsplit(self.path)
            if length:
                recorded.bodies.append((self.command, parts.path, json.loads(self.rfile.read(length))))
            path, query = parts.path, parse_qs(parts.query)
            recorded.requests.append((self.command, path, query))
            if path == "/api":
                return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
            if path == "/apis":
                version = {"groupVersion": "apps/v1", "version": "v1"}
                group = {"name": "apps", "versions": [version], "preferredVersion": version}
                return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]})
            if path in RESOURCES:
                listed = [
                    {"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": VERBS}
                    for name, kind, namespaced in RESOURCES[path]
                ]
                group_version = path.removeprefix("/api/").removeprefix("/apis/")
                return self._send(
                    200, {"kind": "APIResourceList", "groupVersion": group_version, "resources": listed}
                )
            segments = path.strip("/").split("/")
            if "namespaces" not in segments:
                return self._send(404, {"kind": "Status", "status": "Failure", "code": 404})
            at = segments.index("namespaces")
            namespace, resource = segments[at + 1], segments[at + 2]
            name = segments[at + 3] if len(segments) > at + 3 else None
            api_version = "apps/v1" if segments[0] == "apis" else "v1"
            kind = {"statefulsets": "StatefulSet", "persistentvolumeclaims": "PersistentVolumeClaim"}.get(
                resource, "Pod"
            )
            if name is None:  # the wait after a delete: the object is gone
                return self._send(
                    200,
                    {"kind": f"{kind}List", "apiVersion": api_version, "metadata": {"resourceVersion": "9"}},
                )
            meta = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": "8"}
            return self._send(200, {"kind": kind, "apiVersion": api_version, "metadata": meta})

        do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _answer

    return Handler


@pytest.fixture
def api_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    recorded = Recorded()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorded))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "worker", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "worker"}}],
        "current-context": "c",
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("KUBECACHEDIR", str(tmp_path / "kube-cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    try:
        yield recorded
    finally:
        server.shutdown()
        server.server_close()


def run_scaling_calls(namespace: str) -> None:
    """Every call ``QdrantScaling`` makes through ``Kubectl``: grow two claims, re-create the
    StatefulSet around its pods, delete the removed nodes' claims."""
    kubectl = Kubectl(timeout=60)
    kubectl.resize_pvcs(namespace, ["qdrant-storage-qdrant-0", "qdrant-storage-qdrant-1"], "20Gi")
    kubectl.orphan_statefulset(namespace, RELEASE_NAME)
    kubectl.delete_pvcs(namespace, ["qdrant-storage-qdrant-2", "qdrant-snapshots-qdrant-2"])


def resource_requests(recorded: Recorded) -> list[dict[str, Any]]:
    """The recorded requests as RBAC and admission see them (discovery is granted to every user)."""
    found = []
    for method, path, query in recorded.requests:
        segments = path.strip("/").split("/")
        if "namespaces" not in segments:
            continue
        at = segments.index("namespaces")
        group = segments[1] if segments[0] == "apis" else ""
        name = segments[at + 3] if len(segments) > at + 3 else None
        if method == "GET":
            verb = "watch" if query.get("watch") == ["true"] else ("get" if name else "list")
        else:
            verb = method.lower()
        found.append(
            {
                "verb": verb,
                "group": group,
                "resource": segments[at + 2],
                "namespace": segments[at + 1],
                "name": name or "",
                "operation": {"patch": "UPDATE", "put": "UPDATE", "delete": "DELETE", "post": "CREATE"}.get(
                    verb
                ),
                "query": query,
            }
        )
    return found


def granted(request: dict[str, Any]) -> bool:
    """What the workers hold in a tenant namespace: their ClusterRole and the tenant role that the
    tenant stack binds there (tests/platform/test_worker_rbac.py checks that binding)."""
    return any(
        request["group"] in rule["apiGroups"]
        and request["resource"] in rule["resources"]
        and request["verb"] in rule["verbs"]
        for rule in [*worker_cluster_role()["rules"], *worker_tenant_cluster_role()["rules"]]
    )


def admitted(request: dict[str, Any]) -> bool:
    """Whether the admission policy lets this write through, in tenant-acme (the platform's, as its
    label says) or another namespace as the API server hands it over."""
    policy = worker_admission_policy(group_prefix="oidc:")
    namespace = request["namespace"]
    owner = {"tenancy.platform/tenant": "acme"} if namespace == "tenant-acme" else {}
    review = Review(
        request["operation"],
        request["resource"],
        request["name"],
        namespace=namespace,
        group=request["group"],
        username=WORKER_USER,
        object={"metadata": {"name": request["name"], "namespace": namespace}},
        old_object={"metadata": {"name": request["name"], "namespace": namespace}},
        namespace_object={"metadata": {"name": namespace, "labels": owner}},
    )
    assert matched(policy, review), f"not checked at admission: {request}"
    return not failed_validations(policy, review)


def test_scaling_asks_for_exactly_what_the_workers_role_grants(api_server: Recorded) -> None:
    run_scaling_calls("tenant-acme")

    requests = resource_requests(api_server)
    asked = {(r["verb"], r["group"], r["resource"]) for r in requests}
    # What kubectl really sends: merge patches of the claims, the StatefulSet deleted with orphan
    # propagation, the claims deleted; each delete followed by a list (and watch) until the object is gone.
    assert {
        ("patch", "", "persistentvolumeclaims"),
        ("delete", "apps", "statefulsets"),
        ("delete", "", "persistentvolumeclaims"),
    } <= asked
    [orphaned] = [r for r in requests if r["verb"] == "delete" and r["resource"] == "statefulsets"]
    assert orphaned["name"] == RELEASE_NAME
    # The pods stay: the delete asks the garbage collector to orphan them (README, volume growth).
    [options] = [body for method, path, body in api_server.bodies if path.endswith("/statefulsets/qdrant")]
    assert options["propagationPolicy"] == "Orphan"
    patches = [body for method, path, body in api_server.bodies if method == "PATCH"]
    assert patches == [{"spec": {"resources": {"requests": {"storage": "20Gi"}}}}] * 2
    # No exec, no pod writes: scaling reaches Qdrant over its API, never inside a pod.
    assert not {resource for _, _, resource in asked} - {"persistentvolumeclaims", "statefulsets"}
    for request in requests:
        assert granted(request), f"the workers' ClusterRole does not grant {request['verb']} {request}"
        if request["operation"] is not None:
            assert admitted(request), f"admission refuses {request}"
    # Nothing in the role lets the workers run commands in pods.
    assert not any(
        "pods/exec" in rule["resources"]
        for rule in [*worker_cluster_role()["rules"], *worker_tenant_cluster_role()["rules"]]
    )


@pytest.mark.parametrize("namespace", ["iam", "kube-system", "tenancy-system", "argocd"])
def test_the_same_calls_outside_tenant_namespaces_are_refused_at_admission(
    api_server: Recorded, namespace: str
) -> None:
    run_scaling_calls(namespace)

    writes = [r for r in resource_requests(api_server) if r["operation"] is not None]
    assert {(r["verb"], r["resource"]) for r in writes} >= {
        ("patch", "persistentvolumeclaims"),
        ("delete", "statefulsets"),
        ("delete", "persistentvolumeclaims"),
    }
    for request in writes:
        assert not admitted(request), f"admission lets {request} through"


def test_an_unreachable_api_server_fails_scaling_naming_the_call(
    api_server: Recorded, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kubeconfig = json.loads(Path(str(tmp_path / "kubeconfig")).read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = "http://127.0.0.1:9"  # nothing listens there
    (tmp_path / "kubeconfig").write_text(json.dumps(kubeconfig))
    with pytest.raises(ScalingFailed, match="kubectl delete persistentvolumeclaim failed"):
        Kubectl(timeout=30).delete_pvcs("tenant-acme", ["qdrant-storage-qdrant-2"])
