"""CAM math: the paper's formula, the exact GAP identity, class selection, normalisation, upsampling."""

from __future__ import annotations

import pytest
import torch

import camloc
from camloc.cam import class_activation_maps, normalize_maps, pool_logits, topk_classes, upsample_maps
from camloc.errors import CamlocTypeError, CamlocValueError


@pytest.fixture
def fw() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 6, 4, 5, generator=g), torch.randn(7, 6, generator=g), torch.randn(7, generator=g)


def test_formula_matches_explicit_sum(fw):
    f, w, _ = fw
    maps = class_activation_maps(f, w)
    assert maps.shape == (2, 7, 4, 5)
    ref = torch.zeros(2, 7, 4, 5)
    for n in range(2):
        for c in range(7):
            for k in range(6):
                ref[n, c] += w[c, k] * f[n, k]
    torch.testing.assert_close(maps, ref, rtol=1e-5, atol=1e-5)
    assert (maps < 0).any(), "no ReLU: negative evidence is kept"


def test_gap_identity_and_gmp_logits(fw):
    f, w, b = fw
    maps = class_activation_maps(f, w)
    torch.testing.assert_close(maps.mean((2, 3)) + b, pool_logits(f, w, b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pool_logits(f, w, b, pool="max"), f.amax((2, 3)) @ w.T + b)


def test_class_selection_shared_and_per_image(fw):
    f, w, b = fw
    full = class_activation_maps(f, w)
    shared = class_activation_maps(f, w, torch.tensor([3, 1]))
    torch.testing.assert_close(shared, full[:, [3, 1]])
    per = class_activation_maps(f, w, torch.tensor([[0, 6], [5, 5]]))
    torch.testing.assert_close(per[0], full[0, [0, 6]])
    torch.testing.assert_close(per[1], full[1, [5, 5]])
    with_bias = class_activation_maps(f, w, torch.tensor([2]), bias=b)
    torch.testing.assert_close(with_bias, full[:, [2]] + b[2])


def test_bad_arguments_name_the_argument(fw):
    f, w, _ = fw
    with pytest.raises(CamlocValueError, match="`weight`"):
        class_activation_maps(f, w[:, :5])
    with pytest.raises(CamlocValueError, match="`classes`"):
        class_activation_maps(f, w, torch.tensor([7]))
    with pytest.raises(CamlocValueError, match="`classes`"):
        class_activation_maps(f, w, torch.tensor([[1]]))  # N mismatch
    with pytest.raises(CamlocValueError, match="`features`"):
        class_activation_maps(f[0], w)
    with pytest.raises(CamlocTypeError, match="`features`"):
        class_activation_maps(f.numpy(), w)
    with pytest.raises(CamlocValueError, match="`k`"):
        topk_classes(torch.zeros(1, 3), 0)


def test_topk_sorted_and_capped():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    p, c = topk_classes(logits, 10)
    assert c.tolist() == [[1, 3, 2, 0]]
    torch.testing.assert_close(p.sum(), torch.tensor(1.0))
    assert (p[0, :-1] >= p[0, 1:]).all()


def test_normalize_max_and_minmax_hand_values():
    m = torch.tensor([[[-2.0, 0.0], [1.0, 4.0]]])
    torch.testing.assert_close(normalize_maps(m, mode="max"), torch.tensor([[[0.0, 0.0], [0.25, 1.0]]]))
    torch.testing.assert_close(normalize_maps(m, mode="minmax"), torch.tensor([[[0.0, 2 / 6], [3 / 6, 1.0]]]))
    flat = torch.full((1, 3, 3), 2.0)
    assert normalize_maps(flat, mode="minmax").eq(0).all()
    assert normalize_maps(flat, mode="max").eq(1).all()
    assert normalize_maps(-flat, mode="max").eq(0).all()
    with pytest.raises(CamlocValueError, match="NaN"):
        normalize_maps(torch.tensor([[[float("nan"), 1.0]]]))


def test_upsample_preserves_constant_and_range():
    m = torch.rand(1, 2, 3, 4)
    up = upsample_maps(m, (30, 40))
    assert up.shape == (1, 2, 30, 40)
    assert up.min() >= m.min() - 1e-6 and up.max() <= m.max() + 1e-6  # bilinear never overshoots
    torch.testing.assert_close(upsample_maps(torch.ones(1, 1, 2, 2), (7, 9)), torch.ones(1, 1, 7, 9))
    with pytest.raises(CamlocValueError, match="`size`"):
        upsample_maps(m, (0, 3))


def test_differentiable_maps_give_gradients(tiny_model, images):
    cam = camloc.CAM(tiny_model)
    out = cam(images, classes=torch.tensor([1]), differentiable=True)
    out.maps.sum().backward()
    assert tiny_model.trunk[0].weight.grad is not None and tiny_model.trunk[0].weight.grad.abs().sum() > 0
    out2 = cam(images)
    assert not out2.maps.requires_grad
