"""Pure data and arithmetic of the method: the K×N mask and its checks, units and their consumer graph
as data, rectification, reuse rules (hold / forecast), schedulers' rows per model call. No hooks on a
model and no files."""
