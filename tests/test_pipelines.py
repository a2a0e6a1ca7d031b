"""The bundled models in diffusers' own pipelines: mnist-ddpm is a DDPMPipeline folder; the DiT runs
in DiTPipeline with guidance (exact re-labelling of the null class), samples bit for bit ours."""

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

import blockmask
from blockmask.workbench import Workbench
from blockmask.io.models import bundled_models
from blockmask.pipelines import dit_pipeline
from blockmask.io.resources import assets_dir

from conftest import tiny_spec


def _ours(wb, steps, labels=None, guidance=1.0, seed=0, n=2, mask=None):
    cond = wb.condition(class_label=labels, guidance_scale=guidance) if labels else None
    lat = wb.generate(mask, steps=steps, seed=seed, num_images=n, condition=cond)
    return (lat / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


@pytest.mark.skipif("mnist-ddpm" not in bundled_models(), reason="bundled mnist-ddpm not installed")
def test_bundled_ddpm_is_a_diffusers_pipeline_folder():
    pipe = DiffusionPipeline.from_pretrained(str(assets_dir() / "models" / "mnist-ddpm"))
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe).__name__ == "DDPMPipeline"
    theirs = pipe(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np").images
    wb = Workbench.load("mnist-ddpm", scheduler="ddpm")
    assert np.array_equal(theirs, _ours(wb, 5))


@pytest.mark.parametrize("spec", [tiny_spec("tiny-dit"), "mnist-dit"])
def test_dit_in_ditpipeline_with_guidance_is_bitwise_ours(spec, tmp_path):
    if spec == "mnist-dit" and "mnist-dit" not in bundled_models():
        pytest.skip("bundled mnist-dit not installed")
    wb = Workbench.load(spec)
    pipe = dit_pipeline(wb)
    labels = [3, 7]
    for g in (1.0, 3.0):
        theirs = pipe(class_labels=labels, guidance_scale=g, num_inference_steps=4,
                      generator=torch.Generator().manual_seed(0), output_type="np").images
        assert np.array_equal(theirs, _ours(wb, 4, labels, g))
    if spec != "mnist-dit":
        # a mask applies to the pipeline's (re-labelled) transformer: same units, same images as ours
        m = np.ones((4, len(wb.units)), bool)
        m[2:, :2] = False
        with blockmask.apply(pipe, m):
            masked = pipe(class_labels=labels, guidance_scale=3.0, num_inference_steps=4,
                          generator=torch.Generator().manual_seed(0), output_type="np").images
        assert np.array_equal(masked, _ours(wb, 4, labels, 3.0, mask=m))
        # and it saves and loads as a normal diffusers pipeline folder
        pipe.save_pretrained(tmp_path / "p")
        again = DiffusionPipeline.from_pretrained(str(tmp_path / "p"))
        again.set_progress_bar_config(disable=True)
        out = again(class_labels=labels, guidance_scale=3.0, num_inference_steps=4,
                    generator=torch.Generator().manual_seed(0), output_type="np").images
        assert type(again.vae).__name__ == "PixelSpaceVAE" and np.array_equal(out, _ours(wb, 4, labels, 3.0))
