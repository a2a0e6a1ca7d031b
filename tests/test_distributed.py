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
import json, sys
import numpy as np
from blockmask.api import Workbench
from blockmask.evaluate import Method, generate_set
from blockmask.train import TrainConfig
from blockmask.train_run import run_training
from blockmask import distributed
wb = Workbench.load(sys.argv[1])
imgs = generate_set(wb, Method("fora", wb.baseline("fora", steps=4, interval=2), 4), n=10, batch=3, seed=7,
                    guidance=1.0, class_label=None)
mf, _ = run_training(wb, TrainConfig(steps=4, iters=4, batch=4, lr=0.6, lam=1.0), sys.argv[2], progress=False)
if distributed.is_main(wb.device):
    np.save(sys.argv[3], imgs)
print("RESULT " + json.dumps({"world": distributed.world_size(), "rows": mf.mask.astype(int).tolist()}), flush=True)
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
    # only our own lines: torchrun and libraries may print other output, also lines starting with "{"
    outs = [json.loads(line[7:]) for line in two.stdout.splitlines() if line.startswith("RESULT {")]
    assert len(outs) == 2 and all(o["world"] == 2 for o in outs)
    single = json.loads(next(line[7:] for line in one.stdout.splitlines() if line.startswith("RESULT {")))
    assert outs[0]["rows"] == outs[1]["rows"] == single["rows"]
    assert np.allclose(np.load(tmp_path / "i1.npy"), np.load(tmp_path / "i2.npy"), atol=1e-6)
    assert (tmp_path / "m2.json").is_file()
