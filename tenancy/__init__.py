"""Platform-as-code for a multi-tenant data platform on Kubernetes.

Layers, in the one direction data flows:
``spec`` (pydantic models) -> ``builders`` (pure functions) -> ``components``
(ComponentResources, a top-level package) -> ``stacks`` -> ``automation`` -> ``cli`` / ``service``.
"""
