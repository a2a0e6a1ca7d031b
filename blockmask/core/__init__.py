"""Pure data and arithmetic of the method: the K×N mask and its checks, units and their consumer graph,
rectification, MACs per model call, reuse rules (no hooks left on a model, no files written)."""
