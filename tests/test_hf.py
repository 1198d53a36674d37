"""Hugging Face transformers image classifiers from random-weight configs (nothing downloaded): exact or refused."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import camloc
from camloc.errors import UnsupportedModelError
from camloc.heads import LinearHead, NormPoolHead

T = pytest.importorskip("transformers")


def _model(cfg):
    torch.manual_seed(0)
    return T.AutoModelForImageClassification.from_config(cfg).double().eval()


CONFIGS = {
    "resnet": (lambda: T.ResNetConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], embedding_size=8), LinearHead),
    "convnext": (lambda: T.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]), NormPoolHead),
    "swin": (
        lambda: T.SwinConfig(image_size=64, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2),
        LinearHead,
    ),
    "efficientnet": (
        lambda: T.EfficientNetConfig(image_size=64, width_coefficient=1.0, depth_coefficient=0.2, hidden_dim=1280),
        LinearHead,
    ),
    "mobilenet_v2": (lambda: T.MobileNetV2Config(image_size=64, depth_multiplier=0.25), LinearHead),
}


@pytest.mark.parametrize("family", list(CONFIGS))
def test_hf_family_is_exact_against_its_logits(family):
    make, kind = CONFIGS[family]
    cfg = make()
    cfg.num_labels = 3
    m = _model(cfg)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    cam = camloc.CAM(m)
    assert isinstance(cam.head, kind) and cam.resolved.own
    with torch.no_grad():  # random head weights (HF initialises some heads to small values)
        for p in cam.head.modules()[-1].parameters():
            p.normal_(0.0, 0.5)
        ref = m(x).logits  # the output object's logits
    out = cam(x, classes=torch.arange(3))
    assert cam._verified, "checked against model(x).logits"
    torch.testing.assert_close(out.logits, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.maps.mean((2, 3)) + cam.head.offset(out.classes), ref, rtol=1e-10, atol=1e-10)
    assert out.maps.shape == (2, 3, 2, 2)


def test_hf_swin_tokens_are_placed_on_the_grid():
    make, _ = CONFIGS["swin"]
    m = _model(make())
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    cam = camloc.CAM(m)
    with torch.no_grad():
        f, _ = cam.resolved.run(x)
        hs = m.swin(x, output_hidden_states=True).reshaped_hidden_states[-1]  # HF's own NCHW reshape (pre-norm)
        ref = m.swin.layernorm(hs.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(f, ref, rtol=0, atol=1e-12)


def test_hf_class_token_vit_is_refused_and_a_head_on_its_patch_tokens_works():
    cfg = T.ViTConfig(image_size=32, patch_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=16, num_labels=3)  # fmt: skip
    m = _model(cfg)
    with pytest.raises(UnsupportedModelError, match=r"class token.*camloc fit"):
        camloc.CAM(m)
    new = torch.nn.Linear(16, 2).double()
    out = camloc.CAM(m, classifier=new)(torch.randn(2, 3, 32, 32, dtype=torch.float64), classes=torch.arange(2))
    assert out.maps.shape == (2, 2, 2, 2)
    torch.testing.assert_close(out.maps.mean((2, 3)) + new.bias, out.logits)


def test_import_camloc_does_not_import_transformers_or_keras():
    code = "import sys, camloc; print(any(m in sys.modules for m in ('transformers', 'keras')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
