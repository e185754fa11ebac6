"""Components of the shared platform: one module per service."""
