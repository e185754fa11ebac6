"""The tenant self-service HTTP service: a tenant-scoped API over the automation layer.

``tenancy.service.app.create_app`` builds it; ``tenantctl serve`` runs the embedded default.
"""
