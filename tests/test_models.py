"""Embedded EfficientNet-Lite weights, registry, offline zoo loading and golden predictions on the sample photos."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from PIL import Image

import camloc
from camloc.errors import CamlocValueError
from camloc.models.efficientnet_lite import lite_weights_path, lukemelas_to_timm
from camloc.models.registry import Preprocess, load_state_dict_file

ASSETS = Path(camloc.__file__).parent / "assets"


@pytest.fixture(scope="module")
def lite0():
    return camloc.create_model("lite0")


def test_lukemelas_keys_map_one_to_one_with_shapes():
    state = torch.load(lite_weights_path("lite0"), map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    mapped = lukemelas_to_timm(state, target)
    assert list(mapped) == list(target)
    assert next(iter(state)) == "_conv_stem.weight" and list(state)[-1] == "_fc.bias"
    broken = dict(state)
    broken.pop("_fc.bias")
    with pytest.raises(CamlocValueError, match="one tensor per model tensor"):
        lukemelas_to_timm(broken, target)


def test_lite_info_carries_preprocessing_and_names(lite0):
    model, info = lite0
    assert info.preprocess.size == (224, 224) and info.preprocess.mean == (0.5, 0.5, 0.5)
    assert info.preprocess.interpolation == "bicubic"
    assert len(info.categories) == 1000 and info.categories[967] == "espresso"
    assert info.extra["wnids"][0] == "n01440764"
    assert not model.training


@pytest.mark.parametrize(("name", "size"), [("lite1", 240), ("lite2", 260)])
def test_lite1_lite2_sizes(name, size):
    _, info = camloc.create_model(name)
    assert info.preprocess.size == (size, size)


def _predict(model, info, file):
    img = Image.open(ASSETS / file).convert("RGB")
    out = camloc.CAM(model)(info.preprocess.to_tensor(img)[None], topk=5)
    loc = camloc.localize(out.maps, size=info.preprocess.size, image_sizes=[img.size])
    return img, out, loc


def test_golden_coffee_is_espresso_and_box_covers_the_cup(lite0):
    model, info = lite0
    _, out, loc = _predict(model, info, "coffee.jpg")
    assert info.categories[int(out.classes[0, 0])] == "espresso"
    assert float(out.scores[0, 0]) > 0.5
    # The cup and saucer fill the middle of the 600x400 photo (hand-measured: about x 60..520, y 20..380).
    x0, y0, x1, y1 = loc.boxes[0, 0].tolist()
    assert x0 < 150 and x1 > 430 and y0 < 100 and y1 > 330
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    assert 220 < cx < 380 and 140 < cy < 260


def test_golden_cat_top1_is_a_cat(lite0):
    model, info = lite0
    _, out, loc = _predict(model, info, "cat.jpg")
    cats = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
    assert info.categories[int(out.classes[0, 0])] in cats
    x0, _, x1, _ = loc.boxes[0, 0].tolist()
    assert x1 - x0 > 150  # the cat fills most of the frame


def test_registry_lists_and_refuses(lite0):
    names = [e.name for e in camloc.list_models()]
    assert {"lite0", "lite1", "lite2"} <= set(names)
    with pytest.raises(CamlocValueError, match="`model`"):
        camloc.create_model("nope")
    with pytest.raises(CamlocValueError, match="`name` must be unique"):
        camloc.register_model("lite0")(lambda **kw: None)


def test_torchvision_and_timm_weights_from_local_file_offline(tmp_path):
    tv = torchvision.models.resnet18(weights=None, num_classes=7)
    torch.save({"state_dict": tv.state_dict()}, tmp_path / "tv.pth")
    model, info = camloc.create_model("torchvision:resnet18", weights=tmp_path / "tv.pth")
    assert info.num_classes == 7 and info.preprocess.mean == (0.485, 0.456, 0.406)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(model(x), tv.eval()(x))

    tm = timm.create_model("resnet18", pretrained=False, num_classes=5)
    torch.save(tm.state_dict(), tmp_path / "timm.pth")
    model2, info2 = camloc.create_model("timm:resnet18", weights=tmp_path / "timm.pth")
    assert info2.num_classes == 5
    torch.testing.assert_close(model2(x), tm.eval()(x))

    bad = {k: v for k, v in tm.state_dict().items() if not k.startswith("layer4")}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CamlocValueError, match="missing keys"):
        camloc.create_model("timm:resnet18", weights=tmp_path / "bad.pth")
    with pytest.raises(CamlocValueError, match="`weights`"):
        load_state_dict_file(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CamlocValueError, match="could not read"):
        load_state_dict_file(tmp_path / "junk.pth")


def test_preprocess_geometry_round_trip():
    full = Preprocess(size=(224, 224))
    b = full.boxes_to_image(torch.tensor([[0.0, 0.0, 224.0, 224.0], [0, 0, 0, 0]]), (640, 480))
    assert b.tolist() == [[0.0, 0.0, 640.0, 480.0], [0, 0, 0, 0]]
    crop = Preprocess(size=(224, 224), resize="center_crop", crop_pct=0.875)
    assert crop.resized_size((512, 256)) == (512, 256)  # shorter side 256 -> unchanged
    # input box covering the whole crop -> the central 224x224 of the 512x256 image: x 144..368, y 16..240
    assert crop.boxes_to_image(torch.tensor([0.0, 0.0, 224.0, 224.0]), (512, 256)).tolist() == [144, 16, 368, 240]
    x = full.to_tensor(Image.new("RGB", (50, 30), (255, 0, 128)))
    assert x.shape == (3, 224, 224)
    torch.testing.assert_close(
        x[:, 0, 0], (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(full.mean)) / torch.tensor(full.std)
    )


def test_zoo_kwargs_reach_the_builders(tmp_path):
    model, info = camloc.create_model("timm:resnet18", drop_rate=0.3, num_classes=4)
    assert model.drop_rate == 0.3 and info.num_classes == 4
    tv, _ = camloc.create_model("torchvision:resnet18", num_classes=3, zero_init_residual=True)
    assert float(tv.layer1[0].bn2.weight.detach().abs().sum()) == 0.0  # zero_init_residual reached torchvision's ResNet
    tm = timm.create_model("resnet18", pretrained=False, num_classes=5, in_chans=1)
    torch.save(tm.state_dict(), tmp_path / "gray.pth")
    gray, _ = camloc.create_model("timm:resnet18", weights=tmp_path / "gray.pth", in_chans=1)
    x = torch.randn(1, 1, 64, 64)
    torch.testing.assert_close(gray(x), tm.eval()(x))
    from camloc.errors import CamlocTypeError

    with pytest.raises(CamlocTypeError, match="`kwargs` must be arguments of the timm builder"):
        camloc.create_model("timm:resnet18", bogus=1)
    with pytest.raises(CamlocValueError, match="`pretrained` must be absent"):
        camloc.create_model("timm:resnet18", pretrained=True)


@pytest.mark.parametrize(
    ("spec", "size", "mean", "interp", "crop_pct"),
    [
        # timm pretrained_cfg (timm/models/efficientnet.py, inception_v3.py)
        ("timm:tf_efficientnet_lite0", 224, (0.5, 0.5, 0.5), "bicubic", 0.875),
        ("timm:inception_v3", 299, (0.5, 0.5, 0.5), "bicubic", 0.875),
        ("timm:resnet18", 224, (0.485, 0.456, 0.406), "bicubic", 0.95),
        # torchvision DEFAULT weights' transforms (crop / resize): inception 299 / 342, efficientnet_b3 300 / 320
        ("torchvision:inception_v3", 299, (0.485, 0.456, 0.406), "bilinear", 299 / 342),
        ("torchvision:efficientnet_b3", 300, (0.485, 0.456, 0.406), "bicubic", 300 / 320),
    ],
)
def test_zoo_preprocessing_comes_from_the_models_own_config(spec, size, mean, interp, crop_pct):
    from camloc.models.zoo import zoo_preprocess

    _, info = camloc.create_model(spec)
    pre = info.preprocess
    assert pre.size == (size, size) and pre.interpolation == interp and pre.resize == "full"
    assert pre.mean == pytest.approx(mean) and pre.crop_pct == pytest.approx(crop_pct)
    assert zoo_preprocess(spec) == pre
    # the paper-style GAP network on the same trunk records the trunk's preprocessing too
    from camloc.models.paper import build_gap_network

    if spec == "torchvision:inception_v3":
        return  # not a supported GAP trunk family
    _, gap_info = build_gap_network(spec, 3)
    assert gap_info.preprocess == pre
    assert build_gap_network(spec, 3, img_size=128)[1].preprocess.size == (128, 128)
