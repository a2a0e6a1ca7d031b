"""accelerate multi-process (2 CPU processes via torchrun): generation and training give the
results of a single process."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_spec

SCRIPT = r"""
import json, os, sys
import numpy as np
from blockmask.workbench import Workbench
from blockmask.eval.evaluate import Method, generate_set
from blockmask.learning.train import TrainConfig
from blockmask.learning.run import run_training
from blockmask.sampling import distributed
wb = Workbench.load(sys.argv[1])
imgs = generate_set(wb, Method("fora", wb.baseline("fora", steps=4, interval=2), 4), n=10, batch=3, seed=7,
                    guidance=1.0, class_label=None)
mf, _ = run_training(wb, TrainConfig(steps=4, iters=4, batch=4, lr=0.6, lam=1.0), sys.argv[2], progress=False)
if distributed.is_main(wb.device):
    np.save(sys.argv[3], imgs)
# one result file per process (two processes printing to one pipe can interleave their lines)
rank = int(os.environ.get("RANK", "0"))
with open(f"{sys.argv[2]}.result{rank}.json", "w") as f:
    json.dump({"world": distributed.world_size(), "rows": mf.mask.astype(int).tolist()}, f)
"""


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path):
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not on PATH")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    spec = tiny_spec("tiny-unet")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(script), spec, str(tmp_path / "m1.json"), str(tmp_path / "i1.npy")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr[-800:]
    two = subprocess.run(["torchrun", "--nproc_per_node", "2", str(script), spec, str(tmp_path / "m2.json"),
                          str(tmp_path / "i2.npy")], capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-1500:]
    outs = [json.loads((tmp_path / f"m2.json.result{r}.json").read_text()) for r in (0, 1)]
    assert all(o["world"] == 2 for o in outs)
    single = json.loads((tmp_path / "m1.json.result0.json").read_text())
    assert single["world"] == 1
    assert outs[0]["rows"] == outs[1]["rows"] == single["rows"]
    assert np.allclose(np.load(tmp_path / "i1.npy"), np.load(tmp_path / "i2.npy"), atol=1e-6)
    assert (tmp_path / "m2.json").is_file()
