"""blockmask: learned, timestep-aware block masks for diffusion models (see METHOD.md).

    import blockmask
    wb = blockmask.Workbench.load("mnist-ddpm")
    with blockmask.apply(pipe, "mask.json"):
        pipe(num_inference_steps=50)
"""

__version__ = "0.1.0"

from .api import Workbench, apply  # noqa: E402
from .mask import MaskFile  # noqa: E402

__all__ = ["Workbench", "apply", "MaskFile", "__version__"]
