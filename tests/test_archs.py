"""Modern architectures: exact maps for norm-after-pooling heads and normed-then-averaged tokens, refusals with reasons.

Every supported family is built with random weights in float64 at a small input; ``CAM(model)`` must find the
trunk and head by itself, its logits must equal the model's own ``model(x)`` and its maps must keep the identity
``mean_xy M_c + offset_c == logit_c`` for every class (to 1e-10: float64 rounding of sums over a few hundred terms).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import timm
import torch
import torchvision
from timm.models import metaformer, mlp_mixer, swin_transformer, vision_transformer
from torch import nn

import camloc
from camloc.errors import UnsupportedModelError
from camloc.heads import BatchNormPoolHead, LinearHead, NormPoolHead

TOL = 1e-10


def _check_exact(model: nn.Module, x: torch.Tensor, kind: type, grid: tuple[int, int]) -> camloc.CAM:
    torch.manual_seed(0)
    model = model.double().eval()
    x = x.double()
    cam = camloc.CAM(model)
    assert isinstance(cam.head, kind), cam
    with torch.no_grad():  # timm zero-initialises some classifiers: random head weights make the test non-vacuous
        for mod in cam.head.modules():
            for p in mod.parameters():
                p.normal_(1.0 if p.ndim == 1 and isinstance(mod, nn.LayerNorm) else 0.0, 0.5)
    c = cam.head.num_classes
    out = cam(x, classes=torch.arange(c))
    assert cam.resolved.own
    if grid is None:  # random-weight trunks whose features hardly vary in space: the head's fold is what is checked
        grid = tuple(out.maps.shape[2:])  # (spatial maps: tests/test_head_kinds.py BnAfterPool)
    assert out.maps.shape == (x.shape[0], c, *grid), out.maps.shape
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(out.logits, ref, rtol=TOL, atol=TOL)
    pooled = out.maps.mean((2, 3)) + cam.head.offset(out.classes)
    torch.testing.assert_close(pooled, ref, rtol=TOL, atol=TOL)
    spread = (out.maps - out.maps.mean((2, 3), keepdim=True)).abs().amax()
    assert spread > 1e-3 * ref.abs().amax() or kind is BatchNormPoolHead, "maps vary in space"
    return cam


def _vit(**kw) -> nn.Module:
    base = dict(num_classes=4, patch_size=16, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0)
    return vision_transformer.VisionTransformer(**{**base, **kw})


FAMILIES: dict[str, tuple[Callable[[], nn.Module], tuple[int, int], type, tuple[int, int] | None]] = {
    # name: (constructor, input (H, W), head kind, map (h, w) or None: not checked)
    "timm convnext (head.norm LayerNorm2d)": (
        partial(timm.create_model, "convnext_atto", num_classes=4),
        (64, 64),
        NormPoolHead,
        (2, 2),
    ),
    "timm poolformer (MetaFormer head.norm)": (
        partial(metaformer.MetaFormer, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), use_mlp_head=False, num_classes=4),
        (64, 64),
        NormPoolHead,
        (2, 2),
    ),
    "timm swin (NHWC)": (
        partial(
            swin_transformer.SwinTransformer,
            img_size=64,
            window_size=4,
            depths=(1, 1, 1, 1),
            embed_dim=16,
            num_heads=(1, 1, 1, 1),
            num_classes=4,
        ),
        (64, 64),
        LinearHead,
        (2, 2),
    ),
    "timm mlp-mixer (tokens)": (
        partial(mlp_mixer.MlpMixer, num_classes=4, img_size=(32, 48), patch_size=16, num_blocks=2, embed_dim=16),
        (32, 48),
        LinearHead,
        (2, 3),
    ),
    "timm resmlp (tokens, Affine norm)": (
        partial(
            mlp_mixer.MlpMixer,
            num_classes=4,
            img_size=(32, 48),
            patch_size=16,
            num_blocks=2,
            embed_dim=16,
            mlp_ratio=4,
            block_layer=mlp_mixer.ResBlock,
            norm_layer=mlp_mixer.Affine,
            stem_norm=False,
        ),
        (32, 48),
        LinearHead,
        (2, 3),
    ),
    "timm vit global_pool='avg' (fc_norm)": (
        partial(_vit, img_size=(32, 48), global_pool="avg"),
        (32, 48),
        NormPoolHead,
        (2, 3),
    ),
    "timm vit global_pool='avg', fc_norm=False": (
        partial(_vit, img_size=(32, 48), global_pool="avg", fc_norm=False),
        (32, 48),
        LinearHead,
        (2, 3),
    ),
    "timm vit avg + 4 register tokens, no class token": (
        partial(_vit, img_size=32, global_pool="avg", class_token=False, reg_tokens=4),
        (32, 32),
        NormPoolHead,
        (2, 2),
    ),
    "timm deit avg": (
        partial(timm.create_model, "deit_tiny_patch16_224", img_size=32, depth=1, global_pool="avg", num_classes=4),
        (32, 32),
        NormPoolHead,
        (2, 2),
    ),
    "timm beit (mean pooling)": (
        partial(
            timm.create_model, "beit_base_patch16_224", img_size=32, depth=1, embed_dim=16, num_heads=2, num_classes=4
        ),
        (32, 32),
        NormPoolHead,
        (2, 2),
    ),
    "timm shvit (head BatchNorm1d -> linear)": (
        partial(timm.create_model, "shvit_s1", num_classes=4),
        (128, 128),
        BatchNormPoolHead,
        None,
    ),
    "timm efficientvit_msra (NormLinear: BatchNorm1d -> linear)": (
        partial(timm.create_model, "efficientvit_m0", num_classes=4),
        (128, 128),
        BatchNormPoolHead,
        None,
    ),
    "timm sequencer2d (ClassifierHead, NHWC)": (
        partial(timm.create_model, "sequencer2d_s", num_classes=4),
        (64, 64),
        LinearHead,
        (4, 4),
    ),
    "torchvision convnext": (partial(torchvision.models.convnext_tiny, num_classes=4), (64, 64), NormPoolHead, (2, 2)),
    "torchvision swin": (partial(torchvision.models.swin_t, num_classes=4), (64, 64), LinearHead, (2, 2)),
    "torchvision swin v2": (partial(torchvision.models.swin_v2_t, num_classes=4), (64, 64), LinearHead, (2, 2)),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_is_found_and_exact(family):
    ctor, (h, w), kind, grid = FAMILIES[family]
    torch.manual_seed(0)
    model = ctor()
    _check_exact(model, torch.randn(2, 3, h, w), kind, grid)


def test_layernorm_after_pooling_has_nontrivial_statistics():
    # The pooled LayerNorm's mu and sigma are the image's: the maps of two images differ in their scale 1/sigma.
    torch.manual_seed(0)
    m = timm.create_model("convnext_atto", num_classes=3).double().eval()
    cam = _check_exact(m, torch.randn(2, 3, 64, 64), NormPoolHead, (2, 2))
    assert cam.head.norm is m.head.norm and cam.head.classifier is m.head.fc, "the model's own modules, live"


def test_token_grid_follows_timm_row_major_order():
    # timm's own forward_intermediates reshapes the (normed) patch tokens to NCHW; the trunk must agree with it,
    # including on a non-square grid (2 x 3), so a map's pixel is its patch.
    torch.manual_seed(0)
    m = _vit(img_size=(32, 48), global_pool="avg", fc_norm=False).double().eval()
    x = torch.randn(2, 3, 32, 48, dtype=torch.float64)
    cam = camloc.CAM(m)
    with torch.no_grad():
        f, _ = cam.resolved.run(x)
        ref = m.forward_intermediates(x, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True)[-1]
    assert f.shape == (2, 16, 2, 3)
    torch.testing.assert_close(f, ref, rtol=0, atol=0)


def test_swin_nhwc_features_are_permuted_not_misread():
    torch.manual_seed(0)
    ctor, *_ = FAMILIES["timm swin (NHWC)"]
    m = ctor().double().eval()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    cam = camloc.CAM(m)
    with torch.no_grad():
        f, _ = cam.resolved.run(x)
        torch.testing.assert_close(f, m.forward_features(x).permute(0, 3, 1, 2), rtol=0, atol=0)
    assert "NHWC" in cam.resolved.source


def test_a_head_swapped_on_a_class_token_vit_uses_its_patch_tokens():
    # The class-token head has no exact map, but a linear head fitted on the averaged patch tokens does.
    torch.manual_seed(0)
    m = _vit(img_size=32).double().eval()
    new = nn.Linear(16, 3).double()
    out = camloc.CAM(m, classifier=new)(torch.randn(2, 3, 32, 32, dtype=torch.float64), classes=torch.arange(3))
    assert out.maps.shape == (2, 3, 2, 2)
    torch.testing.assert_close(out.maps.mean((2, 3)) + new.bias, out.logits, rtol=TOL, atol=TOL)


REFUSED = [
    (partial(_vit, img_size=32), "class token.*global_pool='avg'"),
    (partial(torchvision.models.vit_b_16, num_classes=3), "class token.*global_pool='avg'"),
    (partial(timm.create_model, "deit_tiny_distilled_patch16_224", img_size=32, depth=1), "distillation head"),
    (partial(_vit, img_size=32, global_pool="map"), "attention"),
    (partial(_vit, img_size=32, global_pool="avg", class_token=True, pool_include_prefix=True), "class/register"),
    (partial(timm.create_model, "mobilenetv3_small_050"), "conv_head.*camloc fit"),
    (partial(timm.create_model, "ghostnet_100"), "conv_head.*timm:ghostnet_100"),
    (partial(timm.create_model, "vgg11"), "pre_logits"),
    (partial(timm.create_model, "convformer_s18", num_classes=3), "MlpHead, not nn.Linear"),
    (partial(timm.create_model, "mambaout_femto", num_classes=3), "hidden fully-connected"),
    (partial(torchvision.models.maxvit_t, num_classes=3), "hidden layer.*camloc fit"),
    (partial(torchvision.models.mobilenet_v3_small, num_classes=3), "hidden fully-connected.*camloc fit"),
]


@pytest.mark.parametrize(("ctor", "match"), REFUSED, ids=[f"refused-{i}" for i in range(len(REFUSED))])
def test_families_without_an_exact_map_are_refused_with_the_reason(ctor, match):
    with pytest.raises(UnsupportedModelError, match=match):
        camloc.CAM(ctor().eval())
