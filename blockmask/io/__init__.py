"""Files and names: atomic writes and locks, the mask file (format ``blockmask/1``), the hub, model
specs and bundled resources, cache-dit export."""
