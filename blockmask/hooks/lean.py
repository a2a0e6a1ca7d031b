"""A whole run hooks only the units whose cache some step reads (issue 26: time saved per MAC saved).

In a whole run of blockmask's own sampling loop (:meth:`blockmask.hooks.execution.MaskedExecution.whole_run`,
eager, hard gates) the mask is known before the first call. A unit no step reads the cache of (an
all-ones column, like FORA's blocks, or a branch reused only inside its reused block) runs at every call
it gets, as in the plain model, and stores nothing (:meth:`~blockmask.hooks.execution.MaskedExecution.stores`):
its hook would only count the call. Such units get no hook, and :class:`blockmask.hooks.tally.CallTally`
counts their calls after each model call from the mask (:func:`blockmask.core.units.called_mask`), so
``computed`` and ``skipped`` stay what the hooks counted (tests/test_lean.py). On the bundled mnist-dit,
FORA's six blocks then cost no hook work at any call.
"""

from __future__ import annotations

import numpy as np

from blockmask.core.units import called_mask


def hooked(execution) -> tuple[list, list, np.ndarray | None]:
    """(modules, their unit hooks) to register for ``execution``'s run, and per mask row the calls of
    the units left out (None where every unit is hooked: not a lean whole run, or nobody left out)."""
    ex = execution
    everyone = list(range(len(ex.units)))
    m = ex.whole_mask()
    keep, untallied = everyone, None
    if m is not None and ex.lean and ex.mode == "eager" and not ex.static:
        keep = [i for i in everyone if ex.cache_read[i]]  # (MaskedExecution's, set with the mask)
        left = [i for i in everyone if not ex.cache_read[i]]
        if left:
            untallied = called_mask(m, [u.parent for u in ex.units])[:, left].sum(axis=1)
    return [ex.modules[i] for i in keep], [ex.hooks[i] for i in keep], untallied
