"""Identity: CloudNativePG operator, Keycloak's PostgreSQL Cluster, Keycloak and the platform realm."""

from __future__ import annotations

import json

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.kubernetes import custom_resource, helm_release
from components.platform.namespace import PlatformNamespace
from components.platform.passwords import password_taken_once
from tenancy import versions
from tenancy.builders import identity as build
from tenancy.builders import identity_mesh
from tenancy.builders.contract import NAMESPACES, issuer_url
from tenancy.builders.namespace import Manifest
from tenancy.spec.platform import CONFIG_NAMESPACE, PlatformConfig

# Pulumi secret config (``pulumi config set --secret platform:<key>``) for the backup bucket; listed in
# tenancy.spec.platform.SECRET_KEYS, so the config file check accepts them only encrypted.
ACCESS_KEY_ID_CONFIG = "objectStorageAccessKeyId"
SECRET_ACCESS_KEY_CONFIG = "objectStorageSecretAccessKey"


def _secret(name: str, manifest: Manifest, opts: pulumi.ResourceOptions) -> k8s.core.v1.Secret:
    return k8s.core.v1.Secret(
        name,
        metadata=manifest["metadata"],
        type=manifest["type"],
        string_data=manifest["stringData"],
        opts=opts,
    )


def _password(name: str, parent: pulumi.Resource) -> random.RandomPassword:
    # Alphanumeric: these land in env vars, JDBC settings and the realm JSON without quoting.
    return random.RandomPassword(name, length=40, special=False, opts=pulumi.ResourceOptions(parent=parent))


class Identity(pulumi.ComponentResource):
    """Keycloak backed by a CloudNativePG Cluster, with the ``platform`` realm.

    Order: operator release (CRDs, webhook) -> Cluster (waits for Ready) -> Keycloak release.
    """

    issuer_url: pulumi.Output[str]
    api_client_id: pulumi.Output[str]
    argocd_client_id: pulumi.Output[str]
    argocd_client_secret: pulumi.Output[str]
    keycloak_url: pulumi.Output[str]
    provisioner_client_secret: pulumi.Output[str]
    database_cluster_name: pulumi.Output[str]
    operator: k8s.helm.v3.Release
    database: k8s.apiextensions.CustomResource
    keycloak: k8s.helm.v3.Release

    def __init__(
        self,
        name: str,
        *,
        config: PlatformConfig,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("platform:identity:Identity", name, None, opts)
        ha = config.high_availability
        child = pulumi.ResourceOptions(parent=self)

        # --- the operator, outside the mesh ------------------------------------------------
        operator_namespace = PlatformNamespace(
            f"{name}-operator-namespace",
            namespace=NAMESPACES.database_operator,
            mesh=False,
            policies=build.operator_namespace_policies(config),
            dns=config.dns,
            opts=child,
        )
        self.operator = helm_release(
            f"{name}-operator",
            release=build.OPERATOR_RELEASE,
            namespace=NAMESPACES.database_operator,
            pin=versions.CLOUDNATIVE_PG,
            values=build.operator_values(high_availability=ha),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[operator_namespace]),
        )

        # --- namespace iam, meshed ---------------------------------------------------------
        namespace = PlatformNamespace(
            f"{name}-namespace",
            namespace=NAMESPACES.identity,
            mesh=True,
            policies=build.identity_namespace_policies(config),
            dns=config.dns,
            opts=child,
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        # Istio: the allows first, then the deny-by-default that depends on them, so no update of a
        # running platform has a moment in which Keycloak or its database refuse their callers.
        allows = [
            custom_resource(f"{name}-{policy['metadata']['name']}", policy, in_namespace)
            for policy in identity_mesh.authorization_policies(config)
        ]
        custom_resource(
            f"{name}-allow-nothing",
            identity_mesh.deny_by_default(),
            pulumi.ResourceOptions(parent=self, depends_on=[namespace, *allows]),
        )

        db_password = _password(f"{name}-database-password", self)
        db_secret = _secret(
            f"{name}-database-credentials",
            build.basic_auth_secret(
                build.DATABASE_SECRET, username=build.DATABASE_OWNER, password=db_password.result
            ),
            in_namespace,
        )

        database_needs: list[pulumi.Resource] = [self.operator, db_secret]
        if config.object_storage is not None:
            platform = pulumi.Config(CONFIG_NAMESPACE)
            database_needs.append(
                _secret(
                    f"{name}-backup-credentials",
                    build.backup_credentials_secret(
                        access_key_id=platform.require_secret(ACCESS_KEY_ID_CONFIG),
                        secret_access_key=platform.require_secret(SECRET_ACCESS_KEY_CONFIG),
                        region=config.object_storage.region,
                    ),
                    in_namespace,
                )
            )

        # The Cluster's CRD and admission webhook come with the operator release. In prod it is
        # protected (no delete or replace through Pulumi) and kept in the cluster if it ever leaves
        # the program: CNPG deletes the PVCs with the Cluster, and with them every realm and user.
        self.database = custom_resource(
            f"{name}-database",
            build.database_cluster(
                high_availability=ha,
                storage_class=config.storage_class,
                object_storage=config.object_storage,
            ),
            pulumi.ResourceOptions(
                parent=self, depends_on=[namespace, *database_needs], protect=ha, retain_on_delete=ha
            ),
        )
        if config.object_storage is not None:
            custom_resource(
                f"{name}-database-backup",
                build.scheduled_backup(),
                pulumi.ResourceOptions(parent=self, depends_on=[self.database]),
            )
        database_sidecar = build.database_sidecar(config)
        if database_sidecar is not None:  # an object store in the cluster: the instances' mesh scope
            custom_resource(f"{name}-database-sidecar", database_sidecar, in_namespace)
        mesh_exceptions: list[pulumi.Resource] = [
            custom_resource(
                f"{name}-database-status-port", build.database_status_port_exception(), in_namespace
            )
        ]
        if ha:
            jgroups = build.keycloak_jgroups_service()
            mesh_exceptions.append(
                k8s.core.v1.Service(
                    f"{name}-keycloak-jgroups",
                    metadata=jgroups["metadata"],
                    spec=jgroups["spec"],
                    opts=in_namespace,
                )
            )

        # --- Keycloak ------------------------------------------------------------------------
        admin_password = password_taken_once(f"{name}-admin-password", length=40, parent=self, protect=ha)
        admin_secret = _secret(
            f"{name}-admin",
            build.basic_auth_secret(build.ADMIN_SECRET, username="admin", password=admin_password.result),
            in_namespace,
        )
        argocd_secret = password_taken_once(
            f"{name}-argocd-client-secret", length=40, parent=self, protect=ha
        )
        provisioner_secret = password_taken_once(
            f"{name}-provisioner-client-secret", length=40, parent=self, protect=ha
        )
        client_secrets = _secret(
            f"{name}-client-secrets",
            build.opaque_secret(
                build.CLIENT_SECRETS,
                {
                    build.ARGOCD_SECRET_KEY: argocd_secret.result,
                    build.PROVISIONER_SECRET_KEY: provisioner_secret.result,
                },
            ),
            in_namespace,
        )
        # The realm document holds only ${...} placeholders, yet it describes every client: a
        # Secret, not a ConfigMap, keeps it out of reach of namespace readers.
        realm = _secret(
            f"{name}-realm",
            build.opaque_secret(
                build.REALM_SECRET,
                {build.REALM_FILE: json.dumps(build.realm_import(config.domain), indent=2)},
            ),
            in_namespace,
        )
        self.keycloak = helm_release(
            f"{name}-keycloak",
            release=build.KEYCLOAK_RELEASE,
            namespace=NAMESPACES.identity,
            pin=versions.KEYCLOAKX,
            values=build.keycloak_values(domain=config.domain, high_availability=ha),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.database, admin_secret, client_secrets, realm, *mesh_exceptions],
            ),
        )
        custom_resource(
            f"{name}-virtual-service", build.keycloak_virtual_service(config.domain), in_namespace
        )

        self.issuer_url = pulumi.Output.from_input(issuer_url(config.domain))
        self.api_client_id = pulumi.Output.from_input(build.API_CLIENT_ID)
        self.argocd_client_id = pulumi.Output.from_input(build.ARGOCD_CLIENT_ID)
        self.argocd_client_secret = pulumi.Output.secret(argocd_secret.result)
        # Where tenant stacks reach Keycloak's admin API, and the secret of the client they use.
        self.keycloak_url = pulumi.Output.from_input(f"https://{build.auth_host(config.domain)}")
        self.provisioner_client_secret = pulumi.Output.secret(provisioner_secret.result)
        self.database_cluster_name = pulumi.Output.from_input(build.DATABASE_CLUSTER)
        self.register_outputs(
            {
                "issuer_url": self.issuer_url,
                "api_client_id": self.api_client_id,
                "argocd_client_id": self.argocd_client_id,
                "argocd_client_secret": self.argocd_client_secret,
                "keycloak_url": self.keycloak_url,
                "provisioner_client_secret": self.provisioner_client_secret,
                "database_cluster_name": self.database_cluster_name,
            }
        )
