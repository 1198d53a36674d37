"""Head adapters: exactness on every supported architecture (random weights), refusals, no state changes.

For every supported family: ``mean_xy(raw M_c) + b_c == logit_c`` (tight tolerance, double precision) and the
returned logits equal ``model(x)``.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

import camloc
from camloc.errors import CamlocValueError, UnsupportedModelError
from camloc.heads import resolve_head

TORCHVISION_OK = [
    ("resnet18", 64),
    ("resnext50_32x4d", 64),
    ("wide_resnet50_2", 64),
    ("densenet121", 64),
    ("mobilenet_v2", 64),
    ("efficientnet_b0", 64),
    ("efficientnet_v2_s", 64),
    ("regnet_y_400mf", 64),
    ("shufflenet_v2_x0_5", 64),
    ("mnasnet0_5", 64),
    ("googlenet", 64),
    ("inception_v3", 80),
    ("squeezenet1_0", 64),
    ("squeezenet1_1", 64),
]
TIMM_OK = [
    "resnet18",
    "tf_efficientnet_lite0",
    "densenet121",
    "regnety_002",
    "rexnet_100",
    "resnetv2_50",  # 1x1 conv classifier
    "dla34",  # 1x1 conv classifier
    "cspresnet50",
    "inception_v3",
]


def _check_exact(model: nn.Module, size: int, *, pool: str = "avg") -> None:
    torch.manual_seed(0)
    model = model.double().eval()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    cam = camloc.CAM(model)
    out = cam(x, classes=None, topk=3)
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(out.logits, ref, rtol=0, atol=1e-9)
    head = cam.head
    off = head.offset(out.classes)  # b_c for linear heads; 0 for relu-conv heads (bias and ReLU inside the map)
    assert pool == "avg"
    torch.testing.assert_close(out.maps.mean((2, 3)) + off, ref.gather(1, out.classes), rtol=1e-9, atol=1e-9)
    assert out.maps.shape[:2] == (2, 3) and out.maps.ndim == 4


@pytest.mark.parametrize(("name", "size"), TORCHVISION_OK)
def test_torchvision_exact(name, size):
    kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    _check_exact(torchvision.models.get_model(name, weights=None, num_classes=11, **kw), size)


def test_torchvision_googlenet_transform_input_is_applied():
    m = torchvision.models.googlenet(weights=None, aux_logits=False, transform_input=True, init_weights=True)
    _check_exact(m, 64)


@pytest.mark.parametrize("name", TIMM_OK)
def test_timm_exact(name):
    _check_exact(timm.create_model(name, pretrained=False, num_classes=9), 96 if name == "inception_v3" else 64)


def test_timm_max_pool_detected():
    m = timm.create_model("resnet18", pretrained=False, num_classes=4, global_pool="max").double().eval()
    cam = camloc.CAM(m)
    assert cam.head.pool == "max"
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    out = cam(x, classes=torch.arange(4))
    f = m.forward_features(x)
    torch.testing.assert_close(out.logits, f.amax((2, 3)) @ m.fc.weight.T + m.fc.bias)


@pytest.mark.parametrize(
    ("ctor", "match"),
    [
        (lambda: torchvision.models.vgg11(weights=None), "vgg16_gap"),
        (lambda: torchvision.models.alexnet(weights=None), "alexnet_gap"),
        (lambda: torchvision.models.mobilenet_v3_small(weights=None), "hidden fully-connected"),
        (lambda: torchvision.models.vit_b_16(weights=None), "class token"),
        (lambda: timm.create_model("mobilenetv3_small_050", pretrained=False), "conv_head"),
        (lambda: timm.create_model("convnext_large_mlp", pretrained=False, num_classes=3), "head.pre_logits"),
        (lambda: timm.create_model("vgg11", pretrained=False), "pre_logits"),
        (lambda: timm.create_model("resnet18", pretrained=False, num_classes=0), "no classifier"),
    ],
)
def test_non_gap_heads_are_refused_with_a_reason(ctor, match):
    with pytest.raises(UnsupportedModelError, match=match):
        camloc.CAM(ctor())


def test_transformer_without_spatial_map_is_refused():
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8).eval()
    with pytest.raises(UnsupportedModelError):
        camloc.CAM(m)(torch.randn(1, 3, 32, 32))


def test_unknown_model_asks_for_explicit_names():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 4, 3)
            self.out = nn.Linear(4, 2)

        def forward(self, x):
            return self.out(self.body(x).mean((2, 3)))

    with pytest.raises(UnsupportedModelError, match="features="):
        camloc.CAM(Odd())
    m = Odd().double().eval()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    for cam in (camloc.CAM(m, features="body", classifier="out"), camloc.CAM(m, features=m.body, classifier=m.out)):
        out = cam(x, classes=torch.tensor([0, 1]))
        torch.testing.assert_close(out.logits, m(x))
        torch.testing.assert_close(out.maps.mean((2, 3)) + m.out.bias, m(x))
    assert not m.body._forward_hooks, "the temporary hook is removed"
    with pytest.raises(CamlocValueError, match="`classifier`"):
        camloc.CAM(m, features="body", classifier="nope")


def test_identity_check_catches_a_hidden_layer():
    class Sneaky(nn.Module):  # claims the timm contract but hides a nonlinearity after pooling
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 3)

        def forward_features(self, x):
            return self.conv(x)

        def forward_head(self, f, pre_logits=False):
            return self.fc(torch.tanh(f.mean((2, 3))))

        def get_classifier(self):
            return self.fc

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    with pytest.raises(UnsupportedModelError, match="not avg-pool -> linear"):
        camloc.CAM(Sneaky().eval())(torch.randn(1, 3, 8, 8))


def test_model_state_is_never_changed(tiny_model, images):
    tiny_model.train()
    flags = [p.requires_grad for p in tiny_model.parameters()]
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    out = camloc.CAM(tiny_model)(images)
    assert tiny_model.training
    assert [p.requires_grad for p in tiny_model.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    assert not tiny_model._forward_hooks and all(not m._forward_hooks for m in tiny_model.modules())
    assert out.maps.shape == (3, 5, 16, 20)


def test_bad_model_type():
    with pytest.raises(TypeError, match="`model`"):
        resolve_head("resnet")  # type: ignore[arg-type]
