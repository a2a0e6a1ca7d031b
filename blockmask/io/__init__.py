"""Files and names: atomic writes and locks, the hub, model specs and bundled resources, diffusers
pipelines of the bundled models, the frontier file, cache-dit export."""
