"""Row graphs (execution mode ``rowgraph``): the logic that CUDA graphs rely on, tested on the CPU with
the replay check standing in for ``torch.cuda.CUDAGraph`` (it re-runs the recorded call on the static
buffers and fails when a cache buffer was replaced instead of written in place)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blockmask.core.errors import MaskError
from blockmask.hooks import shortcuts
from blockmask.hooks.execution import MaskedExecution
from blockmask.hooks.rowgraph import ReplayCheck, cache_reads, graph_store, plan_rows, release_graphs
from blockmask.sampling.sample import Condition, SampleOptions, sample

K = 6


def test_plan_rows_groups_steps_by_distinct_row_in_first_use_order():
    m = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 1], [1, 0, 1]], dtype=bool)
    plan = plan_rows(m)
    assert plan.distinct == 3
    assert plan.row_of_step.tolist() == [0, 1, 0, 2, 1]
    assert np.array_equal(plan.rows[plan.row_of_step], m)


def test_cache_reads_marks_only_values_a_later_call_reuses():
    m = np.array([[1, 1], [0, 1], [1, 1], [1, 0]], dtype=bool)
    assert cache_reads(m, [-1, -1]).astype(int).tolist() == [[1, 0], [0, 0], [0, 1], [0, 0]]
    # unit 0 nested in unit 1: at step 1 unit 0 is not called (unit 1 reuses), at step 2 it reuses
    m = np.array([[1, 1], [1, 0], [0, 1]], dtype=bool)
    assert cache_reads(m, [1, -1]).astype(int).tolist() == [[1, 1], [0, 0], [0, 0]]
    assert not cache_reads(np.ones((5, 3), dtype=bool), [-1, -1, -1]).any()  # all ones: the plain model


def _run(wb, mask, batch=2, seed=0, **kw):
    ex = MaskedExecution(wb.model, mask, mode="rowgraph", replay_factory=ReplayCheck, **kw)
    with ex:
        out = sample(wb.model, num_steps=K, mask=mask, scheduler=wb.scheduler(), batch=batch, seed=seed,
                     condition=Condition(guidance_scale=1.0), options=SampleOptions(execution=ex))
    return out, ex


@pytest.mark.parametrize("name", ["tiny-unet", "tiny-dit", "tiny-pixart"])
def test_rowgraph_is_bitwise_eager_across_runs_and_batch_sizes(workbenches, monkeypatch, name):
    wb = workbenches(name)
    # eager without the block shortcuts (eager-only; their fused sums equal the blocks' to float rounding,
    # tests/test_shortcuts.py): the code path row graphs record
    monkeypatch.setattr(shortcuts, "SHORTCUTS", {})
    release_graphs(wb.model)
    mask = wb.rectify(wb.baseline("random", steps=K, macs_ratio=0.5, seed=3)).mask
    distinct = plan_rows(mask).distinct
    for batch in (2, 2, 3):
        eager = wb.generate(mask, steps=K, num_images=batch)
        out, ex = _run(wb, mask, batch=batch)
        assert torch.equal(out, eager)
        eager_counts = MaskedExecution(wb.model, mask)
        with eager_counts:
            sample(wb.model, num_steps=K, mask=mask, scheduler=wb.scheduler(), batch=batch,
                   options=SampleOptions(execution=eager_counts))
            assert (ex.computed, ex.skipped) == (eager_counts.computed, eager_counts.skipped)
    stats = graph_store(wb.model, len(wb.units)).stats
    assert stats.captured == 2 * distinct  # one graph per distinct row and call shape, reused by the second run
    assert stats.replays == K + 2 * (K - distinct) and stats.failed == 0  # run 2 replays every step
    release_graphs(wb.model)


def test_all_ones_rowgraph_is_the_plain_model(workbenches):
    wb = workbenches("tiny-dit")
    out, _ = _run(wb, wb.baseline("ones", steps=K))
    assert torch.equal(out, wb.generate(None, steps=K, num_images=2))
    # every model-level hook removed, in the order diffusers needs: no stale wrapper left as the forward
    assert "forward" not in wb.model.__dict__ and not wb.model._diffusers_hook.hooks
    assert graph_store(wb.model, len(wb.units)).stats.captured == 1
    release_graphs(wb.model)


def test_graph_cap_and_failed_captures_fall_back_to_eager(workbenches):
    wb = workbenches("tiny-unet")
    mask = wb.rectify(wb.baseline("random", steps=K, macs_ratio=0.5, seed=1)).mask
    eager = wb.generate(mask, steps=K, num_images=2)
    release_graphs(wb.model)
    out, ex = _run(wb, mask, max_graphs=1)
    assert torch.equal(out, eager)
    assert ex.graphs.stats.captured == 1 and ex.graphs.stats.eager_calls == K - plan_rows(mask).row_of_step.tolist().count(0) + 1
    release_graphs(wb.model)

    class Uncapturable(ReplayCheck):
        def capture(self, fn):
            raise RuntimeError("operation not permitted when stream is capturing")

    ex = MaskedExecution(wb.model, mask, mode="rowgraph", replay_factory=Uncapturable)
    with ex:
        out = sample(wb.model, num_steps=K, mask=mask, scheduler=wb.scheduler(), batch=2,
                     options=SampleOptions(execution=ex))
    assert torch.equal(out, eager)
    assert ex.graphs.stats.failed == plan_rows(mask).distinct and ex.graphs.stats.replays == 0
    assert "operation not permitted" in ex.graphs.stats.errors[0]
    release_graphs(wb.model)


def test_replay_check_catches_a_replaced_cache_buffer(workbenches):
    wb = workbenches("tiny-unet")
    release_graphs(wb.model)
    mask = wb.baseline("deepcache", steps=K, interval=2)
    _run(wb, mask)
    store = graph_store(wb.model, len(wb.units))
    state = next(st for states in store.states for st in states.values() if st.cache is not None)
    state.cache = state.cache.clone()  # what a non-static cache would do: the graphs would read a dead buffer
    with pytest.raises(MaskError, match="replaced instead of written in place"):
        _run(wb, mask)
    release_graphs(wb.model)


def test_rowgraph_under_a_pipeline_steps_by_the_scheduler(workbenches):
    """The row graph hook sits inside the call-numbering hook, so each call replays its own row's graph."""
    from diffusers import DDIMScheduler, DDPMPipeline

    from blockmask.hooks.stepping import SchedulerSteps, apply_block_mask, BlockMaskConfig

    wb = workbenches("tiny-unet")
    release_graphs(wb.model)
    mask = wb.rectify(wb.baseline("random", steps=K, macs_ratio=0.5, seed=2)).mask
    pipe = DDPMPipeline(unet=wb.model, scheduler=DDIMScheduler())

    def run():
        return pipe(batch_size=2, num_inference_steps=K, generator=torch.Generator().manual_seed(0),
                    output_type="np").images

    handle = apply_block_mask(pipe, BlockMaskConfig(mask))
    try:
        want = run()
    finally:
        handle.remove()
    ex = MaskedExecution(wb.model, mask, mode="rowgraph", replay_factory=ReplayCheck)
    steps = SchedulerSteps(ex, pipe.scheduler)
    with ex:
        steps.install()
        try:
            got, again = run(), run()
        finally:
            steps.remove()
    assert np.array_equal(got, want) and np.array_equal(again, want)
    assert ex.graphs.stats.captured == plan_rows(mask).distinct
    release_graphs(wb.model)


def test_rowgraph_without_cuda_falls_back_to_eager_with_a_warning(workbenches):
    wb = workbenches("tiny-dit")
    mask = wb.baseline("fora", steps=K, interval=2)
    with pytest.warns(UserWarning, match="'rowgraph' needs CUDA"):
        out = wb.generate(mask, steps=K, num_images=2, mode="rowgraph")
    assert torch.equal(out, wb.generate(mask, steps=K, num_images=2))
