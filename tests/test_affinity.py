"""camloc.methods.affinity: the random walk, by hand; the method against its definition; the layer it picks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from camloc.errors import CamlocValueError, UnsupportedModelError
from camloc.extractor import CAM
from camloc.methods import affinity as aff
from camloc.methods import get_method
from camloc.models.registry import ModelInfo, Preprocess

INFO = ModelInfo("tiny", tuple("abcde"), Preprocess(size=(32, 32)))


def _feat(*vectors: tuple[float, ...]) -> torch.Tensor:
    """``[1, K, 1, P]`` features from ``P`` vectors of ``K`` values."""
    return torch.tensor(vectors, dtype=torch.float32).T[None, :, None, :]


def test_transition_matrix_by_hand() -> None:
    t = aff.transition_matrix(_feat((1, 0), (2, 0), (0, 1)), beta=1.0)[0]
    assert torch.allclose(t, torch.tensor([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1.0]]))
    # cos 60 deg = 0.5 -> 0.25 at beta 2; cos 180 deg is clamped to 0; the diagonal is 1
    t = aff.transition_matrix(_feat((1, 0), (0.5, 3**0.5 / 2), (-1, 0)), beta=2.0)[0]
    assert torch.allclose(t[0], torch.tensor([1, 0.25, 0]) / 1.25)
    assert torch.allclose(t[2], torch.tensor([0, 0, 1.0]))
    assert torch.allclose(t.sum(1), torch.ones(3))
    # a zero feature vector has no affinity to anything but itself
    t = aff.transition_matrix(_feat((0, 0), (1, 0)), beta=8.0)[0]
    assert torch.allclose(t, torch.eye(2))


def test_walk_by_hand_and_its_invariants() -> None:
    f = _feat((1, 0), (1, 0), (0, 1))
    m = torch.tensor([1.0, 0.0, 0.5]).reshape(1, 1, 1, 3)
    one = aff.affinity_walk(m, f, beta=1.0, iters=1)
    assert torch.allclose(one.flatten(), torch.tensor([0.5, 0.5, 0.5]))  # mass stays inside its group
    assert torch.equal(aff.affinity_walk(m, f, iters=0), m)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 6, 5, 7, generator=g)
    maps = torch.rand(2, 3, 5, 7, generator=g)
    out = aff.affinity_walk(maps, feats, beta=4.0, iters=3)
    lo, hi = maps.flatten(2).amin(2), maps.flatten(2).amax(2)
    assert (out.flatten(2).amin(2) >= lo - 1e-6).all() and (out.flatten(2).amax(2) <= hi + 1e-6).all()
    assert torch.allclose(aff.affinity_walk(torch.full((1, 1, 5, 7), 0.3), feats[:1], iters=5), torch.tensor(0.3))
    t = aff.transition_matrix(feats, beta=4.0)
    step = torch.einsum("npq,nmq->nmp", t, maps.flatten(2)).reshape(maps.shape)
    assert torch.allclose(aff.affinity_walk(maps, feats, beta=4.0, iters=1), step)
    with pytest.raises(CamlocValueError, match="features"):
        aff.affinity_walk(maps, feats[:, :, :4], iters=1)
    with pytest.raises(CamlocValueError, match="iters"):
        aff.affinity_walk(maps, feats, iters=-1)


def _expected(model, x: torch.Tensor, classes: torch.Tensor, scale: float, beta: float, iters: int) -> torch.Tensor:
    """The definition, written out: CAM of the enlarged input, ReLU, max-normalised, walked over the trunk."""
    size = (round(x.shape[2] * scale), round(x.shape[3] * scale))
    big = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    cam = CAM(model)
    feats, _ = cam.forward(big)
    m = cam.maps(feats, classes).clamp(min=0)
    m = m / m.flatten(2).amax(2)[..., None, None]
    return aff.affinity_walk(m, model.trunk(big), beta=beta, iters=iters)


def test_method_is_its_definition(tiny_model, images) -> None:
    assert aff.stride_layer(tiny_model, (32, 32)) == "trunk"  # the trunk's own stride (2) is below 16
    out = get_method("affinity", tiny_model, INFO, beta=2, iters=3)(images, topk=2)
    plain = CAM(tiny_model)(images, topk=2)
    assert torch.equal(out.logits, plain.logits) and torch.equal(out.classes, plain.classes)  # logits=input
    assert out.maps.shape == (3, 2, 24, 30) and out.input_size == (32, 40)  # the trunk's grid of the 1.5x input
    assert torch.allclose(out.maps, _expected(tiny_model, images, out.classes, 1.5, 2.0, 3), atol=1e-5)
    assert float(out.maps.amin()) >= 0 and float(out.maps.amax()) <= 1 + 1e-6
    scaled = get_method("affinity", tiny_model, INFO, scale=2, logits="scaled")(images, topk=2)
    big = F.interpolate(images, size=(64, 80), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(scaled.logits, CAM(tiny_model)(big, topk=2).logits, atol=1e-6)
    same = get_method("affinity", tiny_model, INFO, scale=1, iters=0)(images, topk=2)
    ref = plain.maps.clamp(min=0)
    assert torch.allclose(same.maps, ref / ref.flatten(2).amax(2)[..., None, None], atol=1e-6)
    assert not tiny_model.trunk._forward_hooks, "no hook is left on the caller's model"


def test_a_named_layer_and_bad_layers(tiny_model, images) -> None:
    first = get_method("affinity", tiny_model, INFO, layer="trunk.0", scale=1)(images, topk=1)
    assert first.maps.shape[-2:] == (32, 40)  # the first conv's full-resolution grid
    with pytest.raises(CamlocValueError, match="layer"):
        get_method("affinity", tiny_model, INFO, layer="trunk.9")
    with pytest.raises(UnsupportedModelError, match="4-D"):
        get_method("affinity", tiny_model, INFO, layer="fc")(images, topk=1)


def test_large_grids_are_pooled_to_the_position_cap(tiny_model, images, monkeypatch) -> None:
    monkeypatch.setattr(aff, "MAX_POSITIONS", 100)
    assert aff._grid_cap(8, 10) == (8, 10) and aff._grid_cap(30, 40) == (8, 11)
    out = get_method("affinity", tiny_model, INFO)(images, topk=1)
    assert out.maps.shape[-2:] == (8, 11) and out.maps.shape[-2:].numel() <= 100


def test_auto_picks_the_stride_16_stage_of_real_networks() -> None:
    import timm
    import torchvision

    assert aff.stride_layer(torchvision.models.resnet18().eval(), (224, 224)) == "layer3"
    assert aff.stride_layer(torchvision.models.mobilenet_v2().eval(), (224, 224)) == "features.13"
    lite = timm.create_model("tf_efficientnet_lite0").eval()
    assert aff.stride_layer(lite, (224, 224)) == "blocks.4"
    assert aff.stride_layer(lite, (260, 260)) == "blocks.4"  # lite2's size: 17 = ceil(260 / 16) positions
    assert aff._stride(260, 17) == 16 and aff._stride(260, 9) == 32 and aff._stride(32, 32) == 1
