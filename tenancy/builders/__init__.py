"""Pure builders: specs in, Kubernetes manifests and Helm values out. No Pulumi resources here.

Leaf values that come from the platform stack (namespaces, storage class) may be Pulumi Inputs;
builders only place them, never inspect them, so the same functions serve tests with plain strings.
"""
