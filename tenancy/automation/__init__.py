"""Automation layer: per-tenant stacks driven by the Pulumi Automation API.

``contract`` names what the CLI and the HTTP service use; ``queue`` keeps operations durably;
``worker`` runs them (one per stack, tenants in parallel, recovery first); ``pulumi_engine`` is the one
module that talks to Pulumi; ``fake_engine`` stands in for it in tests and benchmarks.
"""
