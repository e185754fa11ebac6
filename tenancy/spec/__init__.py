"""Spec layer: pydantic models for tenants and platform config, and the errors they raise."""
