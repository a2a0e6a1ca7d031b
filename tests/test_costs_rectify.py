"""MACs (reference totals, CPU attention counting) and rectification properties."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockmask.core import baselines
from blockmask.hooks.costs import measure_macs
from blockmask.core.graph import ConsumerGraph
from blockmask.io.models import from_config
from blockmask.core.rectify import rectify, rectify_eq12
from blockmask.sampling.sample import Condition, sample

from conftest import CONFIGS, GUIDED, REFERENCE, TINY

# Paper's baseline totals (METHOD.md §5), attention matmuls counted, batch 1, no CFG.
PAPER = [("ddpm-cifar10-32", 100, 0.61e12), ("ddpm-lsun-256", 100, 24.9e12),
         ("dit-xl-2-256", 100, 11.9e12), ("dit-xl-2-512", 50, 26.3e12)]


@pytest.mark.parametrize("name, steps, paper", PAPER)
def test_reference_totals_within_3_percent(name, steps, paper):
    model = from_config(REFERENCE / f"{name}.json", device="meta")  # shapes only: no weights, no compute
    total = measure_macs(model).baseline(steps)
    assert abs(total / paper - 1) < 0.03, (name, total / 1e12)


@pytest.mark.parametrize("name", ["tiny-unet", "tiny-dit", "tiny-pixart"])
def test_cpu_counts_attention_like_meta(workbenches, name):
    """On CPU torch's counter misses the flash-attention-for-cpu op; ours must not."""
    cpu = workbenches(name).macs
    meta = measure_macs(from_config(CONFIGS / f"{name}.json", device="meta"))
    assert np.allclose(cpu.unit_macs, meta.unit_macs) and cpu.remainder == pytest.approx(meta.remainder)
    attn = [u.index for u in workbenches(name).units if "attn" in u.kind]
    assert all(cpu.unit_macs[i] > 0 for i in attn)


def test_mask_totals(workbenches):
    p = workbenches("tiny-unet").macs
    n = len(p.unit_macs)
    m = np.ones((5, n), bool)
    assert p.total(m) == pytest.approx(p.baseline(5)) and p.ratio(m) == pytest.approx(1)
    m[1:, 0] = False
    assert p.total(m) == pytest.approx(p.baseline(5) - 4 * p.unit_macs[0])
    assert p.per_step(m)[0] == pytest.approx(p.full_step) and len(p.per_step(m)) == 5


# --- rectification --------------------------------------------------------------------------


def masks(n, k_max=7):
    return st.integers(2, k_max).flatmap(
        lambda k: st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=k, max_size=k)
    ).map(lambda rows: _fix(np.array(rows, bool)))


def _fix(m):
    m[0] = True
    return m


@pytest.mark.parametrize("name", TINY)
def test_rectification_changes_no_sample(workbenches, name):
    """Property, on random masks for every architecture: identical samples, M' <= M, idempotent."""
    wb = workbenches(name)
    n = len(wb.units)
    cond = Condition(guidance_scale=GUIDED[name])

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(masks(n), st.floats(0.2, 0.8))
    def check(m, keep):
        rng = np.random.default_rng(int(m.sum()))
        m = m & (rng.random(m.shape) < keep + 0.2)
        m[0] = True
        r = wb.rectify(m)
        assert not (r.mask & ~m).any()  # M' <= M
        assert np.array_equal(wb.rectify(r.mask).mask, r.mask)  # idempotent
        k = m.shape[0]
        a = sample(wb.model, num_steps=k, scheduler=wb.scheduler(), seed=11, batch=2, mask=m, condition=cond)
        b = sample(wb.model, num_steps=k, scheduler=wb.scheduler(), seed=11, batch=2, mask=r.mask, condition=cond)
        assert torch.equal(a, b)  # max abs diff 0 on CPU

    check()


def test_rectification_removes_something_on_unets(workbenches):
    """Not vacuous: on U-Nets typical sparse masks do contain dead work."""
    wb = workbenches("tiny-unet")
    rng = np.random.default_rng(0)
    removed = 0
    for _ in range(10):
        m = rng.random((8, len(wb.units))) < 0.5
        m[0] = True
        removed += wb.rectify(m).cells_removed
    assert removed > 0


@settings(max_examples=300, deadline=None)
@given(masks(6, k_max=9))
def test_chain_liveness_contains_eq12(m):
    """On a pure chain every cell the paper's Eq. 12 removes is dead by liveness too (Eq. 12 is the
    one-step look-ahead special case; liveness also follows values through several skipped steps)."""
    live = rectify(m, ConsumerGraph.chain(6)).mask
    eq12 = rectify_eq12(m)
    assert not (live & ~eq12).any()


def test_chain_example_by_hand():
    """A 4-step chain worked out by hand (METHOD.md §4)."""
    m = np.array([[1, 1, 1, 1],
                  [1, 0, 1, 1],
                  [1, 1, 0, 1],
                  [0, 1, 1, 0]], bool)
    live = rectify(m, ConsumerGraph.chain(4)).mask
    # step 3: the output reads b_3's cache, so nothing else at step 3 is read;
    # step 2: b_3 reads b_2's step-1 cache; b_1 and b_0 are read by nobody;
    # step 1: b_0 feeds only b_1, which reuses its cache, and b_0 recomputes at step 2.
    assert live.astype(int).tolist() == [[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]]
    eq12 = rectify_eq12(m)
    assert not (live & ~eq12).any() and eq12[1, 0] == 0 and eq12[3].sum() == 0


def test_liveness_follows_multi_step_carry():
    """A value carried through a skipped step and then overwritten is dead (Eq. 12 keeps it)."""
    m = np.ones((4, 2), bool)
    m[1, 1] = m[2, 1] = False  # consumer skipped at steps 1, 2
    m[2, 0] = False  # producer skipped at step 2, recomputed at 3
    live = rectify(m, ConsumerGraph.chain(2)).mask
    assert not live[1, 0] and rectify_eq12(m)[1, 0]


def test_rectify_at_editor_size_and_its_speed_benchmark(capsys):
    """K = 1000, N = 60: rectification only turns cells off, keeps row 0, and is idempotent. Its time
    budget (< 100 ms) is measured by benchmarks/rectify_speed.py, not asserted here (issue 30)."""
    import sys

    g = ConsumerGraph(tuple(tuple(range(i + 1, min(i + 8, 60))) for i in range(60)), tuple(i >= 55 for i in range(60)))
    m = np.random.default_rng(0).random((1000, 60)) < 0.5
    m[0] = True
    r = rectify(m, g).mask
    assert r[0].all() and not (r & ~m).any() and (r != m).any()
    assert np.array_equal(rectify(r, g).mask, r)
    sys.path.insert(0, str(CONFIGS.parent.parent / "benchmarks"))
    import rectify_speed

    rc = rectify_speed.main(["--steps", "50", "--units", "12", "--repeats", "1", "--budget-ms", "1e9"])
    out = capsys.readouterr().out
    assert rc == 0 and "chain" in out and "window" in out and "median" in out
    assert rectify_speed.main(["--units", "2"]) == 2


# --- baselines ------------------------------------------------------------------------------


def test_baselines_shapes_and_row0(workbenches):
    wb = workbenches("tiny-unet")
    n = len(wb.units)
    for kind in ("ones", "deepcache", "fora", "uniform"):
        m = wb.baseline(kind, steps=9, interval=3, every=3)
        assert m.shape == (9, n) and m[0].all()
    dc = wb.baseline("deepcache", steps=9, interval=3, branch=1)
    assert dc[3].all() and not dc[1].all()
    assert all(dc[1, u.index] for u in wb.units if u.name.startswith(("down_blocks.0", "up_blocks.1"))
               and "samplers" not in u.name)  # branch 1: DeepCache skips the first downsampler
    assert not dc[1, wb.unit_names.index("down_blocks.0.downsamplers.0")]
    assert not any(dc[1, u.index] for u in wb.units if u.name.startswith("mid_block"))
    fo = baselines.fora(7, 4, interval=2)
    assert fo[::2].all() and not fo[1::2].any()
    un = baselines.uniform(6, 5, every=3)
    assert (un[1:].sum(0) >= 1).all() and un[1:].sum() == pytest.approx(5 * 5 / 3, abs=3)


def test_random_baselines(workbenches):
    wb = workbenches("tiny-dit")
    m = wb.baseline("random", steps=20, skip=0.5, seed=1)
    leaves = [u.index for u in wb.units if u.kind != "block"]  # whole blocks are never skipped at random
    assert abs((~m[1:, leaves]).mean() - 0.5) < 0.02 and m[:, [u.index for u in wb.units if u.kind == "block"]].all()
    assert np.array_equal(m, wb.baseline("random", steps=20, skip=0.5, seed=1))
    r = wb.baseline("random", steps=20, macs_ratio=0.7, seed=2)
    assert abs(wb.macs.ratio(r) - 0.7) < 0.02


def test_baseline_errors(workbenches):
    from blockmask.core.errors import BlockmaskError

    with pytest.raises(BlockmaskError, match="U-Nets"):
        workbenches("tiny-dit").baseline("deepcache", steps=5)
    with pytest.raises(BlockmaskError, match="interval must be >= 1"):
        baselines.fora(5, 3, interval=0)
    with pytest.raises(BlockmaskError, match="MAC ratio must be in"):
        workbenches("tiny-dit").baseline("random", steps=5, macs_ratio=0.01)


# --- rectification beyond 63 units (issue 31, item 1) -----------------------------------------


def _liveness_by_hand(m: np.ndarray, g: ConsumerGraph) -> np.ndarray:
    """The definition (METHOD.md §4), cell by cell with plain booleans: no bitsets, any N."""
    k_steps, n = m.shape
    live = np.zeros_like(m)
    needed_next = np.zeros(n, bool)  # needed(k+1, i) where M[k+1, i] == 0 (read through the cache)
    for k in range(k_steps - 1, -1, -1):
        needed = np.zeros(n, bool)
        for i in range(n - 1, -1, -1):
            needed[i] = g.feeds_output[i] or needed_next[i] or any(live[k, c] for c in g.consumers[i])
            live[k, i] = m[k, i] and needed[i]
        needed_next = needed & ~m[k]
    live[0] = True
    return live


def _random_dag(rng, n: int) -> ConsumerGraph:
    consumers = tuple(tuple(sorted(set(rng.integers(i + 1, n, size=rng.integers(0, 4)).tolist()))) if i + 1 < n else ()
                      for i in range(n))
    feeds = tuple(bool(i == n - 1 or rng.random() < 0.05) for i in range(n))
    return ConsumerGraph(consumers, feeds)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(65, 130), st.integers(2, 6), st.floats(0.1, 0.9))
def test_rectify_beyond_64_units_matches_liveness_by_hand(seed, n, k, keep):
    """N > 64 (DiT-XL/2 has 84 units, PixArt-XL 112): the bitset pass equals the definition on random
    DAGs, M' <= M, idempotent; on a chain it contains Eq. 12. The old int64 bitsets overflowed here."""
    rng = np.random.default_rng(seed)
    g = _random_dag(rng, n)
    m = rng.random((k, n)) < keep
    m[0] = True
    r = rectify(m, g)
    assert np.array_equal(r.mask, _liveness_by_hand(m, g))
    assert not (r.mask & ~m).any() and np.array_equal(r.removed, m & ~r.mask)
    assert np.array_equal(rectify(r.mask, g).mask, r.mask)
    chain = rectify(m, ConsumerGraph.chain(n)).mask
    assert np.array_equal(chain, _liveness_by_hand(m, ConsumerGraph.chain(n)))
    assert not (chain & ~rectify_eq12(m)).any()


def test_rectify_beyond_64_units_removes_high_units():
    """Not vacuous: dead cells above bit 63 are found (a chain of 100, consumer 99 skipped at the last step)."""
    m = np.ones((3, 100), bool)
    m[2, 99] = False
    r = rectify(m, ConsumerGraph.chain(100))
    assert r.mask[2, :99].sum() == 0 and r.removed[2, 70:99].all()
