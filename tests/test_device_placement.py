"""Inputs that schedulers keep on the CPU (timesteps) must follow the model to its device.

CI has no GPU, so the model goes to PyTorch's ``meta`` device, which rejects mixing devices the
same way CUDA does (found on an H200: the DiT adapter passed CPU timesteps to a CUDA model)."""

import pytest
import torch

from blockmask.adapters import adapter_for
from blockmask.workbench import Workbench

from conftest import CONFIGS


@pytest.mark.parametrize("cfg", ["tiny-dit.json", "tiny-pixart.json", "tiny-unet.json", "tiny-unet-cond.json"])
def test_forward_accepts_cpu_timestep_for_a_model_elsewhere(cfg):
    wb = Workbench.load(f"config:{CONFIGS / cfg}")
    model = wb.model
    adapter = adapter_for(model)
    cond = adapter.conditioning(model, 2, generator=torch.Generator().manual_seed(0))
    model = model.to("meta")
    x = torch.zeros(2, *adapter.latent_shape(model), device="meta")
    out = adapter.forward(model, x, torch.tensor(500), cond.to("meta", torch.float32))
    out = adapter.split_output(model, out)
    assert out.device.type == "meta" and out.shape[0] == 2
