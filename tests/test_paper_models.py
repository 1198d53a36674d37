"""The paper's GAP/GMP networks: head contract, exact CAM identity, trunk weights from torchvision files."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from camloc.errors import CamlocValueError, UnsupportedModelError
from camloc.models.paper import PAPER_ARCHS, GapNet, build_gap_network, gap_head
from camloc.models.registry import IMAGENET_MEAN, IMAGENET_STD, create_model, list_models, register_model

# (arch, feature-map side at a 64x64 input); AlexNet: 64 -> conv1/4 -> 15 -> pool 7 -> pool 3.
SPATIAL = {"alexnet": 3, "vgg16": 4, "googlenet": 4, "tiny": 16}


def _x(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small convolutions on a shared 2-core machine run several times faster on one intra-op thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def nets() -> dict[str, tuple[GapNet, object]]:
    torch.manual_seed(0)
    return {a: create_model(a, num_classes=5) for a in PAPER_ARCHS}


def test_all_paper_archs_are_registered() -> None:
    names = {e.name for e in list_models()}
    assert set(PAPER_ARCHS) <= names
    assert len(PAPER_ARCHS) == 8


def test_duplicate_registration_raises() -> None:
    with pytest.raises(CamlocValueError, match="vgg16_gap"):
        register_model("vgg16_gap")(lambda **kw: None)


@pytest.mark.parametrize("arch", PAPER_ARCHS)
def test_head_contract_and_shapes(arch: str, nets: dict) -> None:
    model, info = nets[arch]
    family, tag = arch.rsplit("_", 1)
    k = 64 if family == "tiny" else 1024
    s = SPATIAL[family]
    x = _x()
    with torch.no_grad():
        f = model.forward_features(x)
        logits = model(x)
        pooled = model.forward_head(f, pre_logits=True)
    assert f.shape == (2, k, s, s)
    assert bool((f >= 0).all())  # after the added ReLU
    assert logits.shape == (2, 5)
    assert pooled.shape == (2, k)
    assert torch.equal(logits, model.forward_head(f))
    assert model.cam_pool == ("avg" if tag == "gap" else "max")
    clf = model.get_classifier()
    assert isinstance(clf, nn.Linear) and clf.in_features == k and clf.out_features == 5
    assert model.num_features == k
    assert info.name == arch and info.num_classes == 5
    assert info.preprocess.mean == IMAGENET_MEAN and info.preprocess.std == IMAGENET_STD
    assert info.preprocess.size == ((64, 64) if family == "tiny" else (224, 224))


@pytest.mark.parametrize("arch", [a for a in PAPER_ARCHS if a.endswith("_gap")])
def test_exact_cam_identity(arch: str, nets: dict) -> None:
    """mean_xy(sum_k w_ck f_k) + b_c == logit_c (the paper's M_c, no ReLU), in float64 for the reference."""
    model, _ = nets[arch]
    x = _x(seed=1)
    with torch.no_grad():
        f = model.forward_features(x)
        logits = model.forward_head(f)
    fc = model.get_classifier()
    cams = torch.einsum("ck,nkhw->nchw", fc.weight.detach().double(), f.double())
    ref = cams.mean(dim=(2, 3)) + fc.bias.detach().double()
    scale = float(ref.abs().max()) + 1e-3
    assert torch.allclose(logits.double(), ref, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("arch", [a for a in PAPER_ARCHS if a.endswith("_gmp")])
def test_gmp_pools_with_max_exactly(arch: str, nets: dict) -> None:
    model, _ = nets[arch]
    x = _x(seed=2)
    with torch.no_grad():
        f = model.forward_features(x)
        ref = model.get_classifier()(f.flatten(2).max(dim=2).values)
        assert torch.equal(model.forward_head(f), ref)
        avg = model.get_classifier()(f.mean(dim=(2, 3)))
    assert not torch.allclose(ref, avg, rtol=1e-3, atol=0)


def test_vgg16_trunk_is_conv1_1_to_conv5_3() -> None:
    model, _ = build_gap_network("vgg16_gap", 3)
    convs = [m for m in model.trunk if isinstance(m, nn.Conv2d)]
    pools = [m for m in model.trunk if isinstance(m, nn.MaxPool2d)]
    assert len(convs) == 13 and len(pools) == 4  # pool5 removed
    assert isinstance(model.trunk[-1], nn.ReLU)
    conv = model.extra.conv
    assert (conv.kernel_size, conv.stride, conv.padding, conv.out_channels) == ((3, 3), (1, 1), (1, 1), 1024)


def test_alexnet_and_googlenet_trunks_end_where_the_paper_says() -> None:
    alex, _ = build_gap_network("alexnet_gap", 3)
    assert isinstance(alex.trunk[-1], nn.ReLU) and sum(isinstance(m, nn.Conv2d) for m in alex.trunk) == 5
    goog, _ = build_gap_network("googlenet_gap", 3)
    names = [n for n, _ in goog.trunk.named_children()]
    assert names[-1] == "inception4e" and "inception5a" not in names and "maxpool4" not in names
    assert "transform_input" not in names  # off when training from scratch


def test_vgg16_loads_a_torchvision_checkpoint_into_the_trunk(tmp_path) -> None:
    torch.manual_seed(3)
    ref = torchvision.models.vgg16(weights=None)
    path = tmp_path / "vgg16.pth"
    torch.save(ref.state_dict(), path)
    model, _ = build_gap_network("vgg16_gap", 7, pretrained=path)
    sd = ref.state_dict()
    for k, v in model.trunk.state_dict().items():
        assert torch.equal(v, sd[f"features.{k}"])
    # the trunk computes what torchvision's features[:30] computes
    x = _x(1, 64, seed=4)
    with torch.no_grad():
        assert torch.equal(model.trunk(x), ref.features[:30](x))


def test_broken_checkpoint_names_missing_and_unexpected_keys(tmp_path) -> None:
    with torch.device("meta"):
        sd = torchvision.models.vgg16(weights=None).state_dict()
    sd = {k: torch.zeros(v.shape) for k, v in sd.items() if k != "features.28.weight"}
    sd["features.99.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(CamlocValueError, match=r"missing keys \[features\.28\.weight\]") as ei:
        build_gap_network("vgg16_gap", 3, pretrained=path)
    assert "unexpected keys [features.99.weight]" in str(ei.value)
    assert "`pretrained`" in str(ei.value)


def test_shape_mismatch_is_reported(tmp_path) -> None:
    sd = torchvision.models.alexnet(weights=None).state_dict()
    sd["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    path = tmp_path / "alex.pth"
    torch.save(sd, path)
    with pytest.raises(CamlocValueError, match=r"shape mismatches \[features\.0\.weight"):
        build_gap_network("alexnet_gap", 3, pretrained=path)


def test_googlenet_checkpoint_with_aux_heads_and_transform_input(tmp_path) -> None:
    ref = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True, transform_input=True)
    path = tmp_path / "googlenet.pth"
    torch.save(ref.state_dict(), path)
    model, info = build_gap_network("googlenet_gap", 4, pretrained=path)
    assert torch.equal(model.trunk.conv1.conv.weight, ref.conv1.conv.weight)
    assert info.extra["build"]["transform_input"] is True
    x = _x(1, 64, seed=5)
    ref.eval()
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.trunk.transform_input(x), ref._transform_input(x))
        want = ref.conv1(ref._transform_input(x))
        assert torch.allclose(model.trunk[:2](x), want, atol=1e-6)


def test_full_network_weights_roundtrip_through_the_registry(tmp_path, nets: dict) -> None:
    model, _ = nets["tiny_gap"]
    path = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), path)
    again, info = create_model("tiny_gap", weights=path)  # num_classes read from the file
    assert info.num_classes == 5
    x = _x(seed=6)
    with torch.no_grad():
        assert torch.equal(again(x), model.eval()(x))


def test_trunk_from_a_camloc_network_file(tmp_path, nets: dict) -> None:
    """A trained GapNet's state dict initialises the trunk of a new network (other classes, new head)."""
    model, _ = nets["tiny_gap"]
    path = tmp_path / "trained.pth"
    torch.save(model.state_dict(), path)
    new, _ = build_gap_network("tiny_gmp", 2, pretrained=path)
    for k, v in model.trunk.state_dict().items():
        assert torch.equal(new.trunk.state_dict()[k], v)
    assert new.get_classifier().out_features == 2


@pytest.mark.parametrize(
    ("spec", "channels"),
    [
        ("timm:resnet18", 512),
        ("torchvision:resnet18", 512),
        ("torchvision:mobilenet_v3_small", 576),
        ("torchvision:shufflenet_v2_x0_5", 1024),
        ("torchvision:regnet_y_400mf", 440),
    ],
)
def test_zoo_trunks_get_a_gap_head(spec: str, channels: int) -> None:
    model, info = build_gap_network(spec, 6)
    model.eval()
    x = _x(1, 64, seed=7)
    with torch.no_grad():
        f = model.forward_features(x)
        logits = model(x)
    assert f.shape[:2] == (1, channels) and logits.shape == (1, 6)
    fc = model.get_classifier()
    ref = (
        torch.einsum("ck,nkhw->nc", fc.weight.detach().double(), f.double()) / (f.shape[2] * f.shape[3])
        + fc.bias.detach().double()
    )
    assert torch.allclose(logits.double(), ref, atol=1e-5)
    assert info.name == spec and model.cam_pool == "avg"


def test_torchvision_trunk_weights_from_a_classifier_file(tmp_path) -> None:
    torch.manual_seed(8)
    ref = torchvision.models.resnet18(weights=None, num_classes=10)  # head size differs: ignored
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    model, _ = build_gap_network("torchvision:resnet18", 3, pool="max", pretrained=path)
    assert torch.equal(model.trunk.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)
    assert torch.equal(model.trunk.conv1.weight, ref.conv1.weight)
    assert model.cam_pool == "max"


def test_timm_trunk_weights_from_a_timm_file(tmp_path) -> None:
    import timm

    torch.manual_seed(9)
    ref = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "timm_r18.pth"
    torch.save(ref.state_dict(), path)
    model, _ = build_gap_network("timm:resnet18", 3, pretrained=path)
    ref.eval()
    model.eval()
    x = _x(1, 64, seed=10)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), ref.forward_features(x))
    bad = {k: v for k, v in ref.state_dict().items() if not k.startswith("layer4.0.conv1")}
    torch.save(bad, path)
    with pytest.raises(CamlocValueError, match=r"missing keys \[layer4\.0\.conv1\.weight\]"):
        build_gap_network("timm:resnet18", 3, pretrained=path)


def test_gap_head_on_a_plain_trunk_and_reset_classifier() -> None:
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1))
    model = gap_head(trunk, 4, pool="max")
    assert model.num_features == 12 and model.cam_pool == "max"
    assert model(_x(1, 16)).shape == (1, 4)
    model.reset_classifier(9)
    assert model.get_classifier().out_features == 9 and model(_x(1, 16)).shape == (1, 9)
    with pytest.raises(CamlocValueError, match="`num_classes` must be >= 1"):
        model.reset_classifier(0)


def test_bad_specs_raise_clear_errors() -> None:
    with pytest.raises(CamlocValueError, match="`arch` must be one of"):
        build_gap_network("resnet18", 3)
    with pytest.raises(CamlocValueError, match="`pool` must be 'avg' for 'vgg16_gap'"):
        build_gap_network("vgg16_gap", 3, pool="max")
    with pytest.raises(CamlocValueError, match="timm model"):
        build_gap_network("timm:not_a_model_xyz", 3)
    with pytest.raises(UnsupportedModelError, match="torchvision CNN of a supported family"):
        build_gap_network("torchvision:vit_b_16", 3)
    with pytest.raises(CamlocValueError, match="`categories` must be 3 names"):
        build_gap_network("tiny_gap", 3, categories=("a", "b"))


def test_camloc_finds_the_head_of_gap_nets(nets: dict) -> None:
    heads = pytest.importorskip("camloc.heads")
    for arch in ("tiny_gap", "tiny_gmp"):
        model, _ = nets[arch]
        head = heads.resolve_head(model.eval())
        assert head.pool == model.cam_pool
        assert head.classifier is model.get_classifier()


def _fresh_registry(monkeypatch: pytest.MonkeyPatch, modules: tuple[str, ...]) -> Any:
    from camloc.models import registry

    monkeypatch.setattr(registry, "BUILTIN_MODULES", modules)
    monkeypatch.setattr(registry, "_builtin_loaded", False)
    monkeypatch.setattr(registry, "_REGISTRY", {})
    return registry


def test_broken_builtin_module_surfaces_its_own_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # before: contextlib.suppress(ImportError) turned a broken paper.py into "`model` must be a registered name"
    import sys

    registry = _fresh_registry(monkeypatch, ("camloc.models.efficientnet_lite", "camloc.models.paper"))
    monkeypatch.setitem(sys.modules, "camloc.models.paper", None)  # importing it now raises ImportError
    with pytest.raises(ImportError, match=r"camloc\.models\.paper"):
        registry.list_models()
    with pytest.raises(ImportError, match=r"camloc\.models\.paper"):
        create_model("vgg16_gap")
    assert registry._REGISTRY == {}  # nothing half-registered; the next call retries
    monkeypatch.delitem(sys.modules, "camloc.models.paper")
    assert "vgg16_gap" in {e.name for e in registry.list_models()}


def test_bug_inside_builtin_module_propagates(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    (tmp_path / "camloc_test_broken_builtin.py").write_text("BUILTIN_MODELS = ()\nundefined_name + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = _fresh_registry(monkeypatch, ("camloc.models.paper", "camloc_test_broken_builtin"))
    with pytest.raises(NameError, match="undefined_name"):
        registry.get_model_entry("vgg16_gap")


def test_models_package_has_no_import_cycle() -> None:
    # the builders import the shared types and weight loaders, never the registry (which imports them)
    import ast
    from pathlib import Path

    import camloc.models as pkg

    folder = Path(pkg.__file__).parent
    for name in ("efficientnet_lite", "paper", "zoo", "info", "weights"):
        tree = ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "camloc.models.registry" not in imported, name
        assert "camloc.models" not in imported, name
