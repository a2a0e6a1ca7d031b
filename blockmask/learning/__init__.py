"""Learning and planning masks on the one sampling loop: the per-step trainer (Δ_k, λ_k), refinement,
checkpointed runs, the budget planner, its frontier and frontier file, the other methods
(:mod:`blockmask.learning.methods`)."""
