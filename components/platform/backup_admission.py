"""Cluster-wide admission for tenants' backup jobs: only the platform's CronJob runs pods under the
ServiceAccount ``qdrant-backup`` (which Vault trusts with a tenant's object-store credentials), and only a
platform identity changes that CronJob or ServiceAccount (tenancy.builders.backup)."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from tenancy.builders.backup import admission_policies, admission_policy_binding


class BackupAdmission(pulumi.ComponentResource):
    def __init__(self, name: str, *, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:platform:BackupAdmission", name, None, opts)
        for policy in admission_policies():
            suffix = policy["metadata"]["name"]
            declared = k8s.admissionregistration.v1.ValidatingAdmissionPolicy(
                f"{name}-{suffix}",
                metadata=policy["metadata"],
                spec=policy["spec"],
                opts=pulumi.ResourceOptions(parent=self),
            )
            binding = admission_policy_binding(policy)
            k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding(
                f"{name}-{suffix}-binding",
                metadata=binding["metadata"],
                spec=binding["spec"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[declared]),
            )
        self.register_outputs({})
