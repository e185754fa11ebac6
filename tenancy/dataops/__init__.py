"""Tenant data operations: Qdrant backups to object storage, restore, and draining peers on scale-down.

Pure logic against two narrow interfaces (Qdrant's HTTP API and an S3 bucket), so the same code runs
in the tenant's backup CronJob, in a platform worker, and in tests against stand-ins.
"""
