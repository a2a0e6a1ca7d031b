"""A four-step guided tour a teacher can walk a class through, shown by both apps (plain text only)."""

from __future__ import annotations

TOUR: tuple[tuple[str, str], ...] = (
    ("1 · What a cell is",
     "Each **row** of the mask is one sampling step k (top = noisiest, with its timestep t); each **column** is "
     "one network unit (a ResNet block, an attention layer), grouped by block. A **blue** cell runs the unit at "
     "that step. A **grey** cell skips it and returns the output cached at the last step where it ran. "
     "*Try it:* hover a cell to read its unit, step and MACs, then click one and watch the MACs readout drop."),
    ("2 · Why reuse is nearly free",
     "Neighbouring steps see nearly the same input, so many units change little from one step to the next and "
     "their cached output is a good stand-in. *Try it:* load the DeepCache preset, press **Generate** and compare "
     "the original and masked images; the difference image is amplified so small errors show. The divergence "
     "plot shows at which step the error enters the trajectory."),
    ("3 · What rectification removes",
     "Some computed cells are dead work: nobody reads their output (no live unit uses it at that step, and the "
     "cache is overwritten before a later step reads it). **Rectify** removes them (orange-red) — exactly, the "
     "images do not change. *Try it:* drag a box over a few columns of the middle rows, then press Rectify."),
    ("4 · Why Δ_k matters",
     "Δ_k measures how much the model output changes between consecutive steps (METHOD.md Eq. 9). Where Δ_k is "
     "small, reuse is safe; training pushes sparsity hardest there (λ_k, Eq. 10) and protects the steps where "
     "Δ_k is large. *Try it:* press **Compute Δ_k**; the strip beside the grid rows shows it per step."),
)
