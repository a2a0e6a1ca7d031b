"""torch-fidelity's weight cache never runs code (issue 31, item 5): a pickle planted as the
Inception weights in $TORCH_HOME is refused with one line and never executed."""

import os
import pickle

import numpy as np
import pytest

from blockmask.core.errors import BlockmaskError


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what a planted file would do on unpickling
        return (os.mkdir, (self.marker,))


def test_planted_inception_pickle_is_refused_not_run(tmp_path, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as fx

    from blockmask.eval.evaluate import fidelity_metrics

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ckpt = tmp_path / "torch" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    (ckpt / os.path.basename(fx.URL_INCEPTION_V3)).write_bytes(pickle.dumps(_Payload(str(marker))))
    imgs = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(BlockmaskError, match="not plain tensors; refused unloaded"):
        fidelity_metrics(imgs, imgs, extractor="inception-v3-compat")
    assert not marker.exists()


def test_other_torch_fidelity_extractors_are_refused(workbenches):
    from blockmask.eval.evaluate import EvalConfig, Method, evaluate

    with pytest.raises(BlockmaskError, match="not supported: use mnist-cnn or inception-v3-compat"):
        evaluate(workbenches("tiny-unet"), [Method("o", None, 2)], EvalConfig(n=4, extractor="dinov2-vit-s-14"))
