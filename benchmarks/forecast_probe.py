"""Probe (issue 26; forecast is now an execution mode, ``reuse="forecast"`` in :mod:`blockmask.core.forecast`,
and a planner candidate — this script kept for the record of the first measurement): reused units *forecast* by first-order extrapolation
of their last two computed values (TaylorSeer-style, ``F(k) ≈ F(k1) + a·(k − k1)/(k1 − k0)·(F(k1) − F(k0))``)
instead of holding the last one, on a rule mask at K = 50. ``a`` (0, 0.5 or 1) is chosen on the
calibration seeds (0.., 64 samples); validation (10 000.., 128) and test (20 000.., 128) are reported
for the chosen ``a`` and for plain holding (a = 0), PSNR against the plain 50-step run, as the planner
scores. It monkeypatches ``UnitHook.new_forward`` in this process only.

    OMP_NUM_THREADS=1 python benchmarks/forecast_probe.py mnist-ddpm deepcache:2:0 deepcache:2:1
    OMP_NUM_THREADS=1 python benchmarks/forecast_probe.py mnist-dit fora:2:0 fora:3:0 blocks:3:0
"""
import sys
import numpy as np, torch
from blockmask.workbench import Workbench
from blockmask.learning.planner import Planner
from blockmask.learning.planscore import psnr_db, Group
from blockmask.learning.candidates import Candidate, rule_mask
from blockmask.hooks.execution import UnitHook
from blockmask.core.outputs import map_tensors

model, budget_specs = sys.argv[1], sys.argv[2:]
torch.set_num_threads(1)
ALPHA = [0.0]
orig = UnitHook.new_forward
stats = {"extrap": 0}

def nf(self, module, *args, **kwargs):
    ex = self.execution
    g = ex.gate(self.index)
    st = self.states.get_state()
    if g is True:
        old, oldk = st.cache, getattr(st, "k_last", None)
        out = orig(self, module, *args, **kwargs)
        if st.cache is not old:
            st.prev, st.k_prev, st.k_last = old, oldk, ex.step
        return out
    prev = getattr(st, "prev", None)
    if ALPHA[0] and prev is not None and st.k_prev is not None and st.k_last > st.k_prev:
        scale = ALPHA[0] * (ex.step - st.k_last) / (st.k_last - st.k_prev)
        saved = st.cache
        st.cache = map_tensors(lambda a, b: a + scale * (a - b), saved, prev)
        stats["extrap"] += 1
        try:
            return orig(self, module, *args, **kwargs)
        finally:
            st.cache = saved
    return orig(self, module, *args, **kwargs)

UnitHook.new_forward = nf
wb = Workbench.load(model)
pl = Planner(wb, ref_steps=50, calib=64, valid=128, progress=False, learn=False)
K = 50
test = Group("test", 20000, 128, 64)

def score(m, group, a, k=K):
    ALPHA[0] = a
    pl.scorer._err.clear()
    return psnr_db(pl.scorer.errors(group, Candidate(f"x{a}", "rule", k, m, pl.cost(k, m), {"a": a})))

for spec in budget_specs:
    kind, iv, br = spec.split(":")
    params = {"kind": kind, "interval": int(iv)}
    if kind == "deepcache":
        params["branch"] = int(br)
    m = rule_mask(wb, params, K)
    res = {a: score(m, pl.calib, a) for a in (0.0, 0.5, 1.0)}
    print(spec, "macs", round(pl.macs_ratio(K, m), 4), "calib", res, "extrapolations", stats["extrap"], flush=True)
    a = max(res, key=res.get)
    print(spec, "chosen alpha", a, "valid", score(m, pl.valid, a), "hold valid", score(m, pl.valid, 0.0),
          "test", score(m, test, a), "hold test", score(m, test, 0.0), flush=True)
