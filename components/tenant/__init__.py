"""Components of one tenant: its namespace and guard rails, access, Qdrant and vCluster."""

from components.tenant.access import TenantAccess
from components.tenant.namespace import TenantNamespace
from components.tenant.network import TenantNetworkPolicies
from components.tenant.qdrant import QdrantCluster
from components.tenant.tenant import TenantResources
from components.tenant.vcluster import VirtualCluster

__all__ = [
    "QdrantCluster",
    "TenantAccess",
    "TenantNamespace",
    "TenantNetworkPolicies",
    "TenantResources",
    "VirtualCluster",
]
