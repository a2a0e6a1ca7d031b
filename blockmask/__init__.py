"""blockmask: learned, timestep-aware block masks for diffusion models (see METHOD.md).

    import blockmask
    wb = blockmask.Workbench.load("mnist-ddpm")
    with blockmask.apply(pipe, "mask.json"):
        pipe(num_inference_steps=50)

    # any diffusers pipeline, any step count: a preset or a mask, until disable()
    blockmask.enable(pipe, "fora:2"); pipe(...); print(blockmask.summary(pipe)); blockmask.disable(pipe)
    blockmask.enable(pipe, budget=0.5)               # the rule mask with the most compute within half the MACs
    mf = blockmask.learn(pipe, prompts=["a cat"], steps=28, budget=0.5)  # scored on the pipe's own images
    s = blockmask.plan(wb, 0.45, ref_steps=50)       # the best schedule (K, mask) for 45% of the plain MACs

    # or, like diffusers' enable_cache: hooks on the units' diffusers HookRegistry until removed
    blockmask.apply_block_mask(pipe, blockmask.BlockMaskConfig(mask="mask.json"))
    blockmask.remove_block_mask(pipe)
"""

__version__ = "0.1.0"

from blockmask import compat  # noqa: E402

compat.install()  # the old flat module names (blockmask.api, blockmask.train_run, …) as aliases

from blockmask.hooks.enable import disable, enable, summary  # noqa: E402
from blockmask.hooks.stepping import BlockMaskConfig, apply_block_mask, remove_block_mask  # noqa: E402
from blockmask.io.maskfile import MaskFile  # noqa: E402
from blockmask.learning.pipelearn import LearnSearch, learn  # noqa: E402
from blockmask.learning.planner import PlanConfig, plan  # noqa: E402
from blockmask.workbench import Workbench, apply  # noqa: E402

__all__ = ["Workbench", "apply", "enable", "disable", "summary", "learn", "LearnSearch", "plan", "PlanConfig", "MaskFile",
           "BlockMaskConfig", "apply_block_mask", "remove_block_mask", "__version__"]
