"""blockmask.hooks.shortcuts.GateTable: in a whole run, each adaLN-Zero block's two gates for every
step its shortcut is taken, made in one go at the first of them. The tests check that the tables are
made once per block and serve every shortcut (the run's MACs fall), that the images equal a run
without tables up to float rounding, that the gates equal the block's own, and that every call the
table was not made for computes its gates as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from blockmask.core import baselines
from blockmask.hooks import runsums, shortcuts
from blockmask.hooks.costs import count_macs
from blockmask.hooks.execution import MaskedExecution

STEPS = 6


@pytest.fixture
def served(monkeypatch):
    """[(tables made, calls a table served)] as they happen (a spy on GateTable)."""
    log = {"made": 0, "served": 0}
    make, gates = shortcuts.GateTable._make, shortcuts.GateTable.gates

    def spy_make(self, *a):
        log["made"] += 1
        return make(self, *a)

    def spy_gates(self, *a):
        out = gates(self, *a)
        log["served"] += out is not None
        return out

    monkeypatch.setattr(shortcuts.GateTable, "_make", spy_make)
    monkeypatch.setattr(shortcuts.GateTable, "gates", spy_gates)
    return log


def fora(wb) -> tuple[np.ndarray, np.ndarray]:
    keep = np.array([u.residual for u in wb.units])
    return baselines.fora(STEPS, len(wb.units), interval=3, keep=keep), keep


@pytest.mark.parametrize("reuse", ["hold", "forecast"])
def test_tables_serve_every_shortcut_of_a_whole_run(workbenches, monkeypatch, served, reuse):
    monkeypatch.setattr(runsums, "plan", lambda execution, modules: None)  # the shortcuts' own sums (not run sums)
    wb = workbenches("tiny-dit")
    m, keep = fora(wb)
    macs, got = count_macs(lambda: wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse))
    blocks, reused_steps = int(keep.sum()), int((~m).any(axis=1).sum())
    assert served == {"made": blocks, "served": blocks * reused_steps} and reused_steps > 1
    monkeypatch.setattr(shortcuts.GateTable, "for_block", classmethod(lambda cls, ex, idx: None))
    before, want = count_macs(lambda: wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse))
    assert served["made"] == blocks  # no table this time
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert macs < before  # the timestep embedding once per timestep, and two of the six chunks


def block_and_inputs(wb, batch=3):
    block = wb.model.transformer_blocks[0]
    labels = torch.arange(batch) % wb.model.config.num_embeds_ada_norm
    return block.norm1, labels


def own_gates(norm, t: float, labels):
    emb = norm.linear(norm.silu(norm.emb(torch.full(labels.shape, t), labels, hidden_dtype=torch.float32)))
    _, _, g_msa, _, _, g_mlp = emb.chunk(6, dim=1)
    return g_msa[:, None], g_mlp[:, None]


def test_gates_equal_the_blocks_own(workbenches):
    wb = workbenches("tiny-dit")
    norm, labels = block_and_inputs(wb)
    table = shortcuts.GateTable((801.0, 401.0, 1.0))
    with torch.no_grad():
        for t in (401.0, 1.0, 801.0):
            got = table.gates(norm, torch.tensor(t).expand(3), labels, torch.float32)
            for g, w in zip(got, own_gates(norm, t, labels)):
                assert g.shape == w.shape == (3, 1, w.shape[-1]) and g.is_contiguous()
                torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
        # a uniform timestep that is not an expanded view is served too
        assert table.gates(norm, torch.full((3,), 401.0), labels, torch.float32) is not None


def test_calls_the_table_was_not_made_for_compute_as_before(workbenches):
    wb = workbenches("tiny-dit")
    norm, labels = block_and_inputs(wb)
    table = shortcuts.GateTable((801.0, 401.0))
    t = torch.tensor(401.0).expand(3)
    with torch.no_grad():
        assert table.gates(norm, t, labels, torch.float32) is not None
        assert table.gates(norm, torch.tensor(500.0).expand(3), labels, torch.float32) is None  # not announced
        assert table.gates(norm, torch.tensor([401.0, 401.0, 801.0]), labels, torch.float32) is None  # mixed
        assert table.gates(norm, t, labels.flip(0), torch.float32) is None  # other labels
        assert table.gates(norm, t, labels[:2], torch.float32) is None  # other batch
        assert table.gates(norm, t[:2], labels[:2], torch.float32) is None
        assert table.gates(norm, t, labels, torch.float64) is None  # other dtype
        assert table.gates(norm, t, None, torch.float32) is None
        norm.emb.train()
        try:
            assert shortcuts.GateTable((401.0,)).gates(norm, t, labels, torch.float32) is None  # label dropout
        finally:
            norm.emb.eval()


def test_tables_only_for_an_announced_run_and_blocks_it_shortcuts(workbenches):
    wb = workbenches("tiny-dit")
    m, keep = fora(wb)
    ex = MaskedExecution(wb.model, m)
    kids = [v.index for v in wb.units if v.parent == int(np.flatnonzero(keep)[0])]
    assert shortcuts.GateTable.for_block(ex, tuple(kids)) is None  # no run announced
    ex.whole_run([(k, 1000.0 - 100 * k) for k in range(STEPS)])
    table = shortcuts.GateTable.for_block(ex, tuple(kids))
    short = [1000.0 - 100 * k for k in range(STEPS) if not m[k, kids].any()]
    assert table.timesteps == tuple(sorted(short)) and 0 < len(short) < STEPS  # the shortcut steps only
    assert table.known == {1000.0 - 100 * k for k in range(STEPS)}  # every call is one of the run's
    block_reused = m.copy()
    block_reused[~m[:, kids].any(axis=1)] = False  # the block reused too where its branches are
    ex.mask = block_reused
    assert shortcuts.GateTable.for_block(ex, tuple(kids)) is None  # never shortcut: no table
    ex.mask = m
    ex.whole_run([(k, 1000.0 - 100 * k) for k in range(STEPS) if m[k].all()])  # only computed steps
    assert shortcuts.GateTable.for_block(ex, tuple(kids)) is None


@pytest.mark.parametrize("labels", [[0, 1], [3, 1, 3, 0, 1, 1]])  # (repeated, out of order: computed once each)
def test_made_tables_match_a_linear_of_the_whole_weight(workbenches, labels):
    """The two chunks' rows of norm1.linear, not a re-implementation of it: the same as slicing the full output."""
    wb = workbenches("tiny-dit")
    norm, _ = block_and_inputs(wb)
    labels = torch.tensor(labels)
    with torch.no_grad():
        made = shortcuts.GateTable((7.0,))._make(norm, torch.int64, labels, torch.float32)
        emb = norm.emb(torch.full(labels.shape, 7), labels, hidden_dtype=torch.float32)
        full = F.linear(norm.silu(emb), norm.linear.weight, norm.linear.bias).chunk(6, dim=1)
    torch.testing.assert_close(made[0, 0][:, 0], full[2], rtol=1e-6, atol=1e-6)  # (J, 2, B, 1, C)
    torch.testing.assert_close(made[0, 1][:, 0], full[5], rtol=1e-6, atol=1e-6)


def test_a_pipeline_run_announces_its_calls_and_each_run_makes_its_own_tables(workbenches, served):
    """blockmask.apply on a DiTPipeline: the scheduler's set_timesteps announces the run's calls, so the
    shortcuts use tables there too (the same images as ours, bit for bit: tests/test_pipelines.py), made
    anew for every pipeline call (other class labels: other gates)."""
    import blockmask
    from blockmask.pipelines import dit_pipeline

    wb = workbenches("tiny-dit")
    pipe = dit_pipeline(wb)
    m, keep = fora(wb)
    blocks, reused_steps = int(keep.sum()), int((~m).any(axis=1).sum())
    outs = []
    with blockmask.apply(pipe, m):
        for labels in ([1, 2], [3, 4]):
            outs.append(pipe(class_labels=labels, guidance_scale=1.0, num_inference_steps=STEPS,
                             generator=torch.Generator().manual_seed(0), output_type="np").images)
    assert served == {"made": 2 * blocks, "served": 2 * blocks * reused_steps}
    assert not np.array_equal(outs[0], outs[1])
