"""Run a stack's program without a cluster or the Pulumi CLI, and capture what it declares."""
