"""The model-level hook that keeps the unit-call counters under compiled code."""

from __future__ import annotations

from diffusers.hooks import ModelHook

TALLY_HOOK = "blockmask_tally"


class CallTally(ModelHook):
    """On the denoiser itself: before each call, :meth:`~blockmask.hooks.execution.MaskedExecution.collect`
    counts the unit calls of the previous one that ran inside compiled code (a whole-model
    ``torch.compile``, diffusers' ``compile_repeated_blocks``), where the unit hooks could only note their
    outcome; after each call, the calls of units left unhooked (:mod:`blockmask.hooks.lean`). Under a
    whole-model compile this is a graph break before the first operation: no extra graph."""

    def __init__(self, execution):
        super().__init__()
        self.execution = execution

    def pre_forward(self, module, *args, **kwargs):
        self.execution.collect_traced()
        return args, kwargs

    def post_forward(self, module, output):
        """After the call: the calls of the units a lean whole run left unhooked (:mod:`blockmask.hooks.lean`)."""
        ex = self.execution
        if ex.untallied is not None:
            ex.computed += int(ex.untallied[ex.step])
        return output
