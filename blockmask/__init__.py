"""blockmask: learned, timestep-aware block masks for diffusion models (see METHOD.md)."""

__version__ = "0.1.0"
