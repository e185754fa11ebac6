"""The HTTP API: routes under a versioned prefix."""

API_PREFIX = "/api/v1"
