"""Platform configuration: the typed form of ``Pulumi.<env>.yaml`` (config namespace ``platform``).

The same model validates the file (render, CLI, CI) and the live Pulumi config (``pulumi up``), so a
mistake reads the same wherever it is found: file, key, reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import ParseResult, urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from tenancy import versions
from tenancy.spec.cidr import Cidr, narrowing
from tenancy.spec.errors import SpecError, SpecIssue, issues_from_validation_error
from tenancy.spec.yaml_loading import load_yaml, yaml_problem

CONFIG_NAMESPACE = "platform"

# Keys an operator sets on tenant stacks (the workers' TENANCY_STACK_CONFIG, or by hand), which the
# tenant program reads (tenancy.stacks.tenant): each is checked before any Pulumi run, naming the key.
KEYCLOAK_URL_KEY = "keycloakUrl"
MANAGE_KEYCLOAK_GROUPS_KEY = "manageKeycloakGroups"
PLATFORM_STACK_KEY = "platformStack"


def tenant_stack_setting_problems(values: Mapping[str, str]) -> list[str]:
    """What is wrong with the operator's settings among ``values`` (keys without the ``platform:``
    namespace, as set), one line each naming the key; absent keys are fine (each has a default)."""
    problems: list[str] = []
    url = values.get(KEYCLOAK_URL_KEY)
    if url is not None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or url != url.strip() or " " in url:
            problems.append(
                f"{CONFIG_NAMESPACE}:{KEYCLOAK_URL_KEY} is {url!r}: set the http(s) URL this stack reaches "
                "Keycloak at, e.g. http://keycloak-http.iam.svc.cluster.local (or leave it out: the "
                "platform's public URL)"
            )
    manage = values.get(MANAGE_KEYCLOAK_GROUPS_KEY)
    if manage is not None and manage not in ("true", "True", "false", "False"):
        problems.append(f"{CONFIG_NAMESPACE}:{MANAGE_KEYCLOAK_GROUPS_KEY} is {manage!r}: set true or false")
    stack = values.get(PLATFORM_STACK_KEY)
    if stack is not None and (
        not stack
        or any(not part or part != part.strip() for part in stack.split("/"))
        or len(stack.split("/")) > 3
    ):
        problems.append(
            f"{CONFIG_NAMESPACE}:{PLATFORM_STACK_KEY} is {stack!r}: name the platform stack as "
            "<organization>/<project>/<stack> (or leave it out: <organization>/<project>/<environment>)"
        )
    return problems


# Keys that hold credentials: read by components with ``require_secret``, never part of PlatformConfig,
# and only ever stored encrypted (``pulumi config set --secret``).
SECRET_KEYS = (
    "vaultToken",
    "vaultTokenReviewerJwt",  # only with a Vault outside the cluster (vault.cidrs)
    "objectStorageAccessKeyId",
    "objectStorageSecretAccessKey",
    "tenantsGitRemote",
    "selfServiceVaultToken",
    "selfServiceApiVaultToken",
)
# Credentials a stack may leave unset (the shipped stack files do): programs under mocks get no placeholder.
OPTIONAL_SECRET_KEYS = frozenset({"selfServiceApiVaultToken"})
# Names a pod resolves to the API server in the cluster, and nothing outside it does.
_IN_CLUSTER_API_NAMES = frozenset(
    {"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
)
_DNS_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,}$")
# An image reference by digest: <repository>[:<tag>]@sha256:<64 hex> (the tag, if any, is informative).
IMAGE_BY_DIGEST = re.compile(r"[a-z0-9./_:-]+@sha256:[0-9a-f]{64}")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)


_VaultCidr = Annotated[str, narrowing("list Vault's addresses only")]
_ObjectStoreCidr = Annotated[str, narrowing("list the object store's addresses only")]
_ApiServerCidr = Annotated[str, narrowing("list the API server's addresses only")]
_GatewayCidr = Annotated[str, narrowing("leave gatewayCidrs empty instead")]


def _is_pem_certificate(text: str | None) -> bool:
    """Whether ``text`` is a PEM certificate (its first one, as Vault reads it) that parses."""
    from cryptography import x509  # only when a Vault outside the cluster is configured

    try:
        x509.load_pem_x509_certificate((text or "").strip().encode())
    except ValueError:
        return False
    return True


class VaultConfig(_Model):
    enabled: bool = Field(default=False, description="Manage tenant secrets in Vault (required in prod).")
    address: str | None = Field(
        default=None, description="Vault API address, e.g. https://vault.example.com."
    )
    kv_mount: str = Field(default="tenants", description="Path of the KV v2 mount holding tenant secrets.")
    kubernetes_auth_path: str = Field(
        default="kubernetes", description="Path of the Kubernetes auth backend."
    )
    kubernetes_host: str = Field(
        default="https://kubernetes.default.svc",
        description="API server address Vault uses to review tokens.",
    )
    cidrs: list[_VaultCidr] = Field(
        default_factory=list,
        description=(
            "Where a Vault outside the cluster listens (CIDRs such as 10.30.0.10/32): tenant pods and the "
            "self-service workers may open connections to these on the address's port."
        ),
    )
    namespace: str | None = Field(
        default=None,
        description=(
            "The namespace of a Vault running in the cluster (when tenant pods and the self-service workers "
            "reach it there): they may open connections to its pods on listenerPort, and their sidecars "
            "know its services (mTLS when Vault is meshed)."
        ),
    )
    listener_port: int = Field(
        default=8200, ge=1, le=65535, description="Vault's listener port in its pods (in-cluster Vault)."
    )
    kubernetes_ca_cert: str | None = Field(
        default=None,
        description=(
            "A Vault outside the cluster (cidrs): the PEM of the cluster's CA, which it checks the API "
            "server's certificate at kubernetesHost with when it reviews a login's token. With it, the "
            "secret config platform:vaultTokenReviewerJwt (a token of a service account bound to "
            "system:auth-delegator) is what Vault reviews tokens with."
        ),
    )
    aws_mount: str = Field(
        default="aws",
        description=(
            "Path of Vault's AWS secrets engine (its root credentials configured by the platform team): "
            "each tenant's backup job gets short-lived object-store credentials from it, limited to the "
            "tenant's prefix of objectStorage.backupBucket."
        ),
    )

    @property
    def outside_cluster(self) -> bool:
        """Vault runs outside the cluster: it is placed by its addresses (``cidrs``), not a namespace."""
        return bool(self.cidrs) and self.namespace is None

    @model_validator(mode="after")
    def _outside_vault_reviews_tokens_itself(self) -> VaultConfig:
        """A Vault outside the cluster cannot review tokens as one inside does (with its own pod's
        service-account token and CA, at kubernetes.default.svc, which it can neither resolve nor
        reach): it needs the API server's address as it reaches it and the cluster's CA (here) and a
        reviewer's token (secret config), or every login of a tenant pod and backup job fails."""
        if not (self.enabled and self.outside_cluster):
            return self
        if urlparse(self.kubernetes_host).hostname in _IN_CLUSTER_API_NAMES:
            raise ValueError(
                "vault.kubernetesHost: a Vault outside the cluster (vault.cidrs) cannot reach "
                f"{self.kubernetes_host}; set the API server's address as Vault reaches it"
            )
        if not _is_pem_certificate(self.kubernetes_ca_cert):
            raise ValueError(
                "vault.kubernetesCaCert: a Vault outside the cluster (vault.cidrs) checks the API server "
                "with the cluster's CA; give its PEM (kubectl get configmap kube-root-ca.crt -n default "
                "-o jsonpath='{.data.ca\\.crt}')"
            )
        return self

    @property
    def port(self) -> int:
        """The port tenant pods connect to, as NetworkPolicies see it: Vault's pod port in the cluster,
        else the port of ``address``."""
        if self.namespace:
            return self.listener_port
        url = urlparse(self.address or "")
        return url.port or (80 if url.scheme == "http" else 443)


class ObjectStorageConfig(_Model):
    """S3-compatible storage for Loki chunks and PostgreSQL backups (prod)."""

    endpoint: str = Field(description="S3 endpoint URL, e.g. https://s3.eu-central-1.amazonaws.com.")
    region: str = Field(default="us-east-1", description="Bucket region.")
    loki_bucket: str = Field(description="Bucket for Loki chunks and indexes.")
    backup_bucket: str = Field(
        description=(
            "Bucket for PostgreSQL base backups and WAL archives, and tenants' Qdrant backups (under "
            "tenants/<env>/<tenant>/qdrant/)."
        )
    )
    force_path_style: bool = Field(default=True, description="Path-style URLs (MinIO, Ceph RGW).")
    cidrs: list[_ObjectStoreCidr] = Field(
        default_factory=list,
        description=(
            "Where the endpoint's address resolves for pods, when the store is outside the cluster (CIDRs "
            "such as 52.219.0.0/16): tenant backup jobs and the platform's own callers (database backups, "
            "Loki, the self-service) may open connections to these on the endpoint's port and nowhere else "
            "outside. With neither cidrs nor namespace, the platform's callers may reach any address there."
        ),
    )
    namespace: str | None = Field(
        default=None,
        description=(
            "The namespace of an object store running in the cluster (MinIO, Ceph RGW): tenant backup jobs "
            "and the platform's own callers may reach its pods on listenerPort, and their sidecars know its "
            "services (Loki, outside the mesh, reaches them in plaintext)."
        ),
    )
    listener_port: int = Field(
        default=9000, ge=1, le=65535, description="The object store's port in its pods (in-cluster store)."
    )
    backup_role_arn: str | None = Field(
        default=None,
        description=(
            "IAM role Vault's AWS engine assumes for tenant backup credentials (credential type "
            "assumed_role); unset: federation tokens of the engine's own IAM user (federation_token)."
        ),
    )

    def _url(self) -> ParseResult:
        return urlparse(self.endpoint if "://" in self.endpoint else f"https://{self.endpoint}")

    @property
    def host(self) -> str:
        """``host[:port]`` of the endpoint."""
        return self._url().netloc

    @property
    def plain_http(self) -> bool:
        return self._url().scheme == "http"

    @property
    def port(self) -> int:
        """The port clients connect to, for egress policies."""
        return self._url().port or (80 if self.plain_http else 443)

    @property
    def pod_port(self) -> int:
        """The port NetworkPolicies see for a store in the cluster (its pods'), else the endpoint's."""
        return self.listener_port if self.namespace else self.port


CniPlatform = Literal["default", "gke", "k3s", "openshift", "cilium"]


class IstioCniConfig(_Model):
    """Where the cluster keeps its CNI plugins and configuration, for Istio's CNI node agent."""

    platform: CniPlatform = Field(
        default="default",
        description=(
            "The cluster's flavour: default (kubeadm, EKS, AKS: /opt/cni/bin, /etc/cni/net.d), gke, k3s, "
            "openshift (Multus, SELinux spc_t), or cilium (Cilium installed with cni.exclusive=false)."
        ),
    )
    cni_bin_dir: str | None = Field(default=None, description="Override the platform's CNI binary directory.")
    cni_conf_dir: str | None = Field(
        default=None, description="Override the platform's CNI configuration directory."
    )
    readiness_taint: bool = Field(
        default=True,
        description=(
            "Run istiod's untaint controller: new nodes registered with the taint "
            "cni.istio.io/not-ready:NoSchedule get it removed once the CNI agent runs there."
        ),
    )

    @field_validator("cni_bin_dir", "cni_conf_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value!r} is not an absolute path on the node")
        return value


_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class DnsConfig(_Model):
    """Where pods resolve names: every namespace's allow-dns NetworkPolicy selects these pods and ports."""

    namespace: str = Field(default="kube-system", description="Namespace of the cluster DNS pods.")
    pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"k8s-app": "kube-dns"},
        description="Labels of the cluster DNS pods (kube-dns and CoreDNS both carry k8s-app=kube-dns).",
    )
    ports: list[int] = Field(
        default_factory=lambda: [53],
        description=(
            "Ports the DNS pods listen on, UDP and TCP each; NetworkPolicies see the pod's port after "
            "the Service's translation (OpenShift: 5353)."
        ),
    )

    @field_validator("pod_labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        if not labels:
            raise ValueError("name at least one label: an empty selector would allow DNS to every pod")
        for key, value in labels.items():
            if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
                raise ValueError(f"{key}={value} is not a Kubernetes label")
        return labels

    @field_validator("ports")
    @classmethod
    def _ports(cls, ports: list[int]) -> list[int]:
        if not ports:
            raise ValueError("list at least one port")
        for port in ports:
            if not 1 <= port <= 65535:
                raise ValueError(f"{port} is not a port (1-65535)")
        return ports


class GitHostsConfig(_Model):
    """Where Argo CD's repo-server fetches what tenants deploy: git remotes, Helm repositories and OCI
    registries named in their applications (the AppProject's sourceRepos)."""

    cidrs: list[Cidr] = Field(
        default_factory=lambda: ["0.0.0.0/0", "::/0"],
        description=(
            "Addresses the repo-server may connect to on `ports` (CIDRs). The default is every address: "
            "tenants choose their repositories, and hosted git services (GitHub, GitLab) serve from many, "
            "changing addresses. Narrow it to your git server, mirror or proxy where there is one. The "
            "self-service reaches these addresses only: its git remote on selfService.gitPort, and from "
            "the workers Helm repositories (the tenant charts) on 443."
        ),
    )
    ports: list[int] = Field(
        default_factory=lambda: [443, 22],
        description="Ports of those hosts: 443 (HTTPS git, Helm and OCI repositories) and 22 (git over SSH).",
    )

    @field_validator("cidrs")
    @classmethod
    def _git_cidrs(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("list at least one CIDR (0.0.0.0/0 and ::/0 allow every address)")
        return values

    @field_validator("ports")
    @classmethod
    def _git_ports(cls, ports: list[int]) -> list[int]:
        if not ports:
            raise ValueError("list at least one port (443 for HTTPS, 22 for SSH)")
        for port in ports:
            if not 1 <= port <= 65535:
                raise ValueError(f"{port} is not a port (1-65535)")
        return ports


class SelfServiceConfig(_Model):
    """The platform's own self-service API and its workers (component ``selfservice``)."""

    image: str | None = Field(
        default=None,
        description=(
            "The service image by digest, <repository>@sha256:<64 hex>; the deploy workflow sets it to the "
            "image it built. Unset: everything is declared but the Deployments run no replicas."
        ),
    )
    workers: int = Field(default=2, ge=1, le=32, description="Operations each worker replica runs at once.")
    state_bucket: str | None = Field(
        default=None,
        description=(
            "Bucket in objectStorage for the tenant stacks' Pulumi state: the bucket of the deploy "
            "workflow's PULUMI_BACKEND_URL, where tenant stacks find the platform stack; unset: a file "
            "backend on a volume of a single worker replica (dev)."
        ),
    )
    transit_key: str = Field(
        default="tenants-transit",
        description=(
            "Vault transit key (hashivault://<key>) encrypting tenant stacks' secrets when Vault is on; "
            "the same key the deploy workflow's TENANCY_SECRETS_PROVIDER names."
        ),
    )
    git_port: int = Field(default=443, ge=1, le=65535, description="Port of the tenants git remote (HTTPS).")

    @field_validator("image")
    @classmethod
    def _image_by_digest(cls, value: str | None) -> str | None:
        if value is not None and not IMAGE_BY_DIGEST.fullmatch(value):
            raise ValueError(f"{value!r} is not an image by digest: <repository>@sha256:<64 hex digits>")
        return value


class PlatformConfig(_Model):
    """Everything that differs between environments."""

    environment: Literal["dev", "prod"] = Field(description="Which environment this stack is.")
    domain: str = Field(description="DNS zone for platform endpoints, e.g. dev.data.example.com.")
    storage_class: str = Field(default="standard", description="Default StorageClass for volumes.")
    expandable_storage_classes: list[str] = Field(
        default_factory=list,
        description=(
            "StorageClasses whose allowVolumeExpansion is true (`kubectl get storageclass`): a tenant's "
            "Qdrant volumes on one of these may grow (the worker resizes the claims). Empty by default, "
            "so every volume change is refused until the platform team lists its classes here."
        ),
    )
    high_availability: bool = Field(
        default=False, description="Run every platform service replicated, with PDBs and anti-affinity."
    )
    gateway_tls_secret: str = Field(
        default="platform-gateway-tls",
        description="Secret in the gateway namespace holding the TLS certificate.",
    )
    kubernetes_group_prefix: str = Field(
        default="oidc:", description="Prefix the API server adds to OIDC groups (its --oidc-groups-prefix)."
    )
    kubernetes_api_cidrs: list[_ApiServerCidr] = Field(
        default_factory=list,
        description=(
            "Where pods reach the Kubernetes API server once its Service address is translated: the "
            "addresses of the default/kubernetes Service's endpoints (`kubectl get endpointslices -n "
            "default -l kubernetes.io/service-name=kubernetes`), as CIDRs such as 10.0.0.2/32. Every "
            "platform workload that calls the API (Argo CD, istiod, the CloudNativePG operator and its "
            "instances, Alloy, the self-service workers) and a tenant's vCluster may open connections on "
            "443/6443 to these and nowhere else. Required by the platform stack and by a tenant with a "
            "vCluster; empty, they fail naming this key."
        ),
    )
    admin_source_cidrs: list[Cidr] = Field(
        default_factory=list,
        description=(
            "Client addresses (CIDRs) that may reach the admin surfaces through the gateway: Keycloak's "
            "admin console (/admin, the master realm), Grafana and Argo CD. Empty: no one from outside; "
            "reach them with kubectl port-forward."
        ),
    )
    gateway_cidrs: list[_GatewayCidr] = Field(
        default_factory=list,
        description=(
            "Where the platform's public names (auth.<domain>) resolve for pods: the gateway load "
            "balancer's addresses (CIDRs). argocd-server reaches Keycloak's public URL, the OIDC issuer, "
            "there and at the gateway pods on 443. Empty: at any address on 443."
        ),
    )
    dns: DnsConfig = Field(default_factory=DnsConfig, description="The cluster DNS pods and ports.")
    git_hosts: GitHostsConfig = Field(
        default_factory=GitHostsConfig,
        description="Where Argo CD's repo-server may fetch tenants' repositories (CIDRs and ports).",
    )
    istio_cni: IstioCniConfig = Field(default_factory=IstioCniConfig, description="Istio CNI node agent.")
    vault: VaultConfig = Field(default_factory=VaultConfig)
    object_storage: ObjectStorageConfig | None = Field(
        default=None, description="Object storage for logs and backups; required when highAvailability is on."
    )
    self_service: SelfServiceConfig = Field(default_factory=SelfServiceConfig)
    vcluster_images: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Digests for the images tenants' vClusters run, read from the registry (`crane digest <image>`) "
            "or a mirror: each key an image the program runs, as tenancy/versions.py names it by tag (e.g. "
            "ghcr.io/loft-sh/vcluster-pro:0.36.1), each value that image by tag and digest, <repository>:"
            "<tag>@sha256:<64 hex>, in the same or a mirror registry. An image without a digest is refused."
        ),
    )

    @field_validator("vcluster_images")
    @classmethod
    def _vcluster_images_by_digest(cls, images: dict[str, str]) -> dict[str, str]:
        known = {pin.by_tag for pin in versions.VCLUSTER_IMAGES}
        for image, override in images.items():
            if image not in known:
                raise ValueError(
                    f"{image!r} is not an image tenants' vClusters run; name one of "
                    + ", ".join(sorted(known))
                )
            name = str(override).partition("@")[0]
            if not IMAGE_BY_DIGEST.fullmatch(str(override)) or ":" not in name.rpartition("/")[2]:
                raise ValueError(
                    f"{image!r} is overridden by {override!r}, which is not an image by tag and digest "
                    "(<repository>:<tag>@sha256:<64 hex digits>; the vCluster chart builds "
                    "<repository>:<tag>): a tag alone may move to other content"
                )
        return images

    @field_validator("domain")
    @classmethod
    def _domain_is_dns(cls, value: str) -> str:
        if not _DNS_NAME.match(value):
            raise ValueError(f"{value!r} is not a DNS name such as dev.data.example.com")
        return value

    def model_post_init(self, _context: Any) -> None:
        if self.environment == "prod" and not self.vault.enabled:
            raise ValueError("vault.enabled must be true in prod: tenant secrets live in Vault there")
        if self.vault.enabled and not self.vault.address:
            raise ValueError("vault.address is required when vault.enabled is true")

        if self.self_service.state_bucket and self.object_storage is None:
            raise ValueError("selfService.stateBucket needs objectStorage (the endpoint and credentials)")
        if self.high_availability and self.object_storage is None:
            raise ValueError(
                "objectStorage is required when highAvailability is true (Loki and backups need it)"
            )


def _keys() -> list[str]:
    return [
        field.alias or name for name, field in PlatformConfig.model_fields.items() if name != "environment"
    ]


def parse_platform_config(values: Mapping[str, Any], *, environment: str, file: str) -> PlatformConfig:
    """Validate config values keyed by their short names (``domain``, ``storageClass``, ...)."""
    try:
        return PlatformConfig.model_validate({**values, "environment": environment})
    except ValidationError as error:
        issues = issues_from_validation_error(error, file=file, prefix=CONFIG_NAMESPACE + ":")
        # Whole-model rules have no single key; they name theirs in the reason.
        raise SpecError([replace(i, field=i.field.rstrip(":")) for i in issues]) from None


def read_platform_config_file(path: Path) -> PlatformConfig:
    """Read ``Pulumi.<env>.yaml`` and validate its ``platform:`` keys."""
    environment = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    try:
        document = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise SpecError(
            [SpecIssue(str(path), "", f"cannot be read as YAML: {yaml_problem(error)}")]
        ) from None
    except OSError as error:
        raise SpecError(
            [SpecIssue(str(path), "", f"cannot be read as YAML: {error.__class__.__name__}")]
        ) from None
    config = document.get("config") or {}
    values: dict[str, Any] = {}
    issues = []
    for key, value in config.items():
        namespace, _, short = str(key).partition(":")
        if namespace != CONFIG_NAMESPACE:
            continue
        if short in SECRET_KEYS:
            if not (isinstance(value, dict) and set(value) == {"secure"}):
                issues.append(
                    SpecIssue(
                        path.name,
                        key,
                        f"holds a credential in plain text; set it with `pulumi config set --secret {key}`",
                    )
                )
            continue
        if short not in _keys():
            issues.append(SpecIssue(path.name, key, f"unknown key; known keys: {', '.join(_keys())}"))
        values[short] = value
    if issues:
        raise SpecError(issues)
    return parse_platform_config(values, environment=environment, file=path.name)


def _decode(raw: str) -> Any:
    """The engine passes every config value as a string, objects and booleans JSON-encoded."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def read_platform_config(get: Callable[[str], str | None], *, environment: str) -> PlatformConfig:
    """Validate the live Pulumi config; ``get`` is ``pulumi.Config('platform').get``."""
    values = {key: _decode(raw) for key in _keys() if (raw := get(key)) is not None}
    return parse_platform_config(values, environment=environment, file=f"Pulumi.{environment}.yaml")


def platform_config_reader(project_dir: Path) -> Callable[[str], PlatformConfig | None]:
    """``environment -> PlatformConfig`` from ``<project_dir>/Pulumi.<env>.yaml``, None when missing or
    invalid (callers then assume nothing of it); re-read only when the file changes."""
    cache: dict[str, tuple[float, PlatformConfig | None]] = {}

    def read(environment: str) -> PlatformConfig | None:
        path = project_dir / f"Pulumi.{environment}.yaml"
        try:
            stamp = path.stat().st_mtime
        except OSError:
            return None
        cached = cache.get(environment)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            config: PlatformConfig | None = read_platform_config_file(path)
        except SpecError:
            config = None
        cache[environment] = (stamp, config)
        return config

    return read
