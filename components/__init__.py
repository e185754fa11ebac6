"""ComponentResources: each declares the resources of one concern from builder output, nothing else."""
