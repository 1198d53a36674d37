"""camloc.methods: the producer interface, the method table, and hand-checkable properties of every method."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import camloc
from camloc.cam import normalize_maps
from camloc.cli import main
from camloc.errors import CamlocError, CamlocTypeError, CamlocValueError, UnsupportedModelError
from camloc.extractor import CAM, CamResult
from camloc.methods import get_method, list_methods, parse_method_args, register_method, resolve_method
from camloc.methods.agnostic import principal_maps
from camloc.methods.resolution import dilate_last_stages
from camloc.models.registry import ModelInfo, Preprocess
from conftest import TinyGap, synthetic_run

INFO = ModelInfo("tiny", tuple("abcde"), Preprocess(size=(32, 32)))
REQUIRED = {"cam", "backprop", "flip", "multiscale", "ensemble", "hires", "dilate", "pca", "ddt", "cam+pca",
            "gradcam", "gradcam++", "scorecam", "layercam", "eigencam", "affinity", "best"}  # fmt: skip


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.float(), b.float(), atol=tol, rtol=tol))


# ------------------------------------------------------------------------------------------------- the table


def test_methods_command_prints_name_tab_description(capsys) -> None:
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [ln.split("\t") for ln in lines]
    assert all(len(r) == 2 and r[0] and r[1] for r in rows)
    assert [r[0] for r in rows] == [n for n, _ in list_methods()]
    assert {r[0] for r in rows} >= REQUIRED
    assert main(["methods", "--json"]) == 0
    assert {d["name"] for d in json.loads(capsys.readouterr().out)} == {r[0] for r in rows}


def test_unknown_names_and_bad_arguments_are_camloc_errors_listing_the_valid_ones(tiny_model) -> None:
    with pytest.raises(CamlocValueError, match=r"`method` must be one of cam, backprop, flip.*, gradcam,"):
        get_method("nope", tiny_model, INFO)
    with pytest.raises(CamlocValueError, match=r"`method_args` must be parameters of method 'flip' \(base, flip"):
        get_method("flip", tiny_model, INFO, scalez=1)
    with pytest.raises(CamlocValueError, match=r"'scales' of method 'multiscale': comma-separated numbers"):
        resolve_method("multiscale", {"scales": "a,b"})
    with pytest.raises(CamlocValueError, match=r"one of product, mean, max"):
        resolve_method("cam+pca", {"combine": "sum"})
    with pytest.raises(CamlocValueError, match=r"`--method-arg` must be KEY=VALUE"):
        parse_method_args(["scales"])
    with pytest.raises(CamlocValueError, match=r"a method name"):
        resolve_method("flip", {"base": "nope"})
    with pytest.raises(CamlocValueError, match=r"`--method` must be one of"):
        resolve_method("nope", names=("--method", "--method-arg"))
    with pytest.raises(CamlocTypeError):
        camloc.methods.make_producer(3, tiny_model, INFO)


def test_string_arguments_are_converted_and_defaults_filled() -> None:
    _, args = resolve_method("multiscale", parse_method_args(["scales=0.5, 1", "flip=yes"]))
    assert args == {"base": "cam", "flip": True, "scales": (0.5, 1.0), "fuse": "mean", "norm": "none",
                    "logits": "views"}  # fmt: skip
    _, args = resolve_method("dilate", {"stages": "2"})
    assert args["stages"] == 2
    with pytest.raises(CamlocValueError, match=r"in \[1, 4\]"):
        resolve_method("dilate", {"stages": 0})


def test_a_wrapped_method_takes_its_own_arguments_as_name_parens(tiny_model, images) -> None:
    from camloc.methods.registry import format_method_value, split_args

    assert split_args("a=1; base=x(k=2;j=y(m=3));") == ["a=1", "base=x(k=2;j=y(m=3))"]
    _, args = resolve_method("flip", parse_method_args(split_args("base=multiscale(scales=1,2;norm=max)")))
    inner = {"base": "cam", "flip": False, "scales": (1.0, 2.0), "fuse": "mean", "norm": "max", "logits": "views"}
    assert args["base"] == ("multiscale", inner)  # converted at once, defaults filled
    assert (
        format_method_value(args["base"])
        == "multiscale(base=cam;flip=False;scales=1.0,2.0;fuse=mean;norm=max;logits=views)"
    )
    _, again = resolve_method("flip", {"base": format_method_value(args["base"])})
    assert again == args  # the shown form reads back the same
    assert resolve_method("flip", {"base": "cam()"})[1]["base"] == "cam"
    nested = get_method("flip", tiny_model, INFO, base="multiscale(scales=1;norm=max)")(images, topk=2)
    direct = get_method("flip", tiny_model, INFO, base=("multiscale", {"scales": (1.0,), "norm": "max"}))
    assert torch.equal(nested.maps, direct(images, topk=2).maps)
    with pytest.raises(CamlocValueError, match=r"parameters of method 'multiscale'"):
        resolve_method("flip", {"base": "multiscale(scalez=1)"})
    with pytest.raises(CamlocValueError, match=r"'scales' of method 'multiscale'"):
        resolve_method("flip", {"base": "multiscale(scales=a)"})
    with pytest.raises(CamlocValueError, match=r"balanced parentheses"):
        split_args("base=multiscale(scales=1")
    with pytest.raises(CamlocValueError, match=r"NAME\(k=v;k=v\)"):
        resolve_method("flip", {"base": "multiscale(scales=1"})


def test_register_method_adds_a_producer(tiny_model, images) -> None:
    name = "test-scaled-cam"

    def build(model, info, *, factor):
        cam = CAM(model)

        class Scaled(camloc.methods.base.MapMethod):
            def forward(self, x):
                return cam.forward(x)

            def maps(self, state, classes):
                return factor * cam.maps(state, classes)

        return Scaled()

    register_method(name, build, description="cam times a factor",
                    params=[camloc.methods.Param("factor", "float", 1.0)])  # fmt: skip
    with pytest.raises(CamlocValueError, match="not yet registered"):
        register_method(name, build, description="again")
    assert (name, "cam times a factor") in list_methods()
    out = get_method(name, tiny_model, INFO, factor="2")(images, topk=2)
    ref = CAM(tiny_model)(images, topk=2)
    assert _close(out.maps, 2 * ref.maps) and torch.equal(out.classes, ref.classes)


# ------------------------------------------------------------------------------------------------- cam, selection


def test_cam_method_is_camloc_cam(tiny_model, images) -> None:
    p = get_method("cam", tiny_model, INFO)
    assert isinstance(p, CAM)
    out, ref = p(images, topk=3), CAM(tiny_model)(images, topk=3)
    assert torch.equal(out.maps, ref.maps) and torch.equal(out.classes, ref.classes)


def test_callable_class_selector_asks_top1_and_true_class_in_one_forward(tiny_model, images) -> None:
    true = torch.tensor([4, 0, 2])
    cam = CAM(tiny_model)
    out = cam(images, classes=lambda lg: torch.stack([lg.argmax(1), true], 1))
    ref = cam(images, topk=1)
    assert torch.equal(out.classes[:, 0], ref.classes[:, 0]) and torch.equal(out.classes[:, 1], true)
    assert _close(out.maps[:, :1], ref.maps)  # same contraction, another class count: rounding only
    with pytest.raises(CamlocTypeError, match="callable returning a Tensor"):
        cam(images, classes=lambda lg: [1, 2])
    # every producer takes it
    pca = get_method("pca", tiny_model, INFO)(images, classes=lambda lg: true[:, None])
    assert torch.equal(pca.classes[:, 0], true)


def test_backprop_method_matches_saliency(tiny_model, images) -> None:
    from camloc.saliency import backprop_saliency

    out = get_method("backprop", tiny_model, INFO)(images, topk=2)
    logits, ref = backprop_saliency(tiny_model, images, out.classes)
    assert _close(out.maps, ref) and _close(out.logits, logits)
    assert out.maps.shape[-2:] == images.shape[-2:]


# ------------------------------------------------------------------------------------------------- augmentation


def _symmetric_model() -> TinyGap:
    """TinyGap with left-right symmetric kernels: flip-equivariant on odd widths (stride-2 centres symmetric)."""
    torch.manual_seed(3)
    m = TinyGap().eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                mod.weight.copy_((mod.weight + mod.weight.flip(-1)) / 2)
    return m


def test_flip_equals_cam_on_a_flip_equivariant_network() -> None:
    m = _symmetric_model()
    x = torch.randn(2, 3, 33, 41, generator=torch.Generator().manual_seed(0))
    ref = CAM(m)(x, topk=2)
    assert _close(CAM(m)(x.flip(-1), topk=2).maps, ref.maps.flip(-1))  # the premise
    out = get_method("flip", m, INFO)(x, topk=2)
    assert torch.equal(out.classes, ref.classes)
    assert _close(out.maps, ref.upsampled()) and _close(out.logits, ref.logits)


def test_flip_of_a_flipped_image_gives_the_mirrored_map(tiny_model, images) -> None:
    flip = get_method("flip", tiny_model, INFO)
    a, b = flip(images, topk=2), flip(images.flip(-1), topk=2)
    assert torch.equal(a.classes, b.classes)
    assert _close(b.maps, a.maps.flip(-1)) and _close(a.logits, b.logits)
    assert a.maps.shape[-2:] == images.shape[-2:] and a.input_size == (32, 40)


def test_multiscale_of_one_scale_is_cam_and_logits_are_the_views_mean(tiny_model, images) -> None:
    ref = CAM(tiny_model)(images, topk=2)
    one = get_method("multiscale", tiny_model, INFO, scales=(1.0,))(images, topk=2)
    assert _close(one.maps, ref.upsampled()) and torch.equal(one.logits, ref.logits)
    two = get_method("multiscale", tiny_model, INFO, scales="1,0.5", flip="true")
    out = two(images, topk=2)
    cam = CAM(tiny_model)
    small = torch.nn.functional.interpolate(images, size=(16, 20), mode="bilinear", antialias=True)
    views = [images, images.flip(-1), small, small.flip(-1)]
    mean_logits = sum(cam(v).logits for v in views) / 4
    assert _close(out.logits, mean_logits)
    maps = [cam(v, classes=out.classes).upsampled((32, 40)) for v in views]
    expected = (maps[0] + maps[1].flip(-1) + maps[2] + maps[3].flip(-1)) / 4
    assert _close(out.maps, expected)


def test_multiscale_norm_and_input_logits(tiny_model, images) -> None:
    """``norm=max`` normalises each view's map before the mean; ``logits=input`` classifies ``x`` itself (the
    scale-1 view when there is one, else one more forward)."""
    cam = CAM(tiny_model)
    ref = cam(images, topk=2)
    out = get_method("multiscale", tiny_model, INFO, scales="1,2", norm="max", logits="input")(images, topk=2)
    assert torch.equal(out.logits, ref.logits) and torch.equal(out.classes, ref.classes)
    big = torch.nn.functional.interpolate(images, size=(64, 80), mode="bilinear", antialias=True)
    views = [cam(v, classes=out.classes).upsampled((32, 40)) for v in (images, big)]
    expected = (normalize_maps(views[0], mode="max") + normalize_maps(views[1], mode="max")) / 2
    assert _close(out.maps, expected)
    raw = get_method("multiscale", tiny_model, INFO, scales="1,2")(images, classes=out.classes)
    assert not _close(raw.maps, out.maps), "the raw mean differs: the two scales have different map scales"
    only = get_method("multiscale", tiny_model, INFO, scales="2", logits="input")(images, topk=2)
    assert torch.equal(only.logits, ref.logits) and _close(only.maps, views[1])
    with pytest.raises(CamlocValueError, match="norm"):
        get_method("multiscale", tiny_model, INFO, norm="sum")


def test_best_is_the_affinity_walk_of_the_1_5x_maps(tiny_model, images) -> None:
    best = get_method("best", tiny_model, INFO)(images, topk=2)
    same = get_method("affinity", tiny_model, INFO, scale=1.5, beta=8, iters=4, logits="input")(images, topk=2)
    assert torch.equal(best.logits, same.logits) and torch.equal(best.maps, same.maps)
    assert torch.equal(best.logits, CAM(tiny_model)(images, topk=2).logits)
    assert float(best.maps.max()) <= 1.0 + 1e-6


def test_ensemble_of_one_model_is_cam_normalised(tiny_model, images) -> None:
    ref = CAM(tiny_model)(images, topk=3)
    out = get_method("ensemble", tiny_model, INFO, models="self")(images, topk=3)
    assert torch.equal(out.classes, ref.classes) and _close(out.scores, ref.scores)
    assert _close(out.maps, normalize_maps(ref.upsampled(), mode="max"))
    two = get_method("ensemble", tiny_model, INFO, models="self,self", norm="minmax")(images, topk=3)
    assert _close(two.maps, normalize_maps(ref.upsampled(), mode="minmax")) and _close(two.scores, ref.scores)


def test_ensemble_members_get_their_own_size_and_normalisation(tiny_model, images) -> None:
    from camloc.methods.tta import Ensemble

    other = Preprocess(size=(16, 20), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear")
    seen: list[torch.Tensor] = []

    class Spy:
        def forward(self, x):
            seen.append(x)
            return x, torch.zeros(x.shape[0], 5)

        def maps(self, state, classes):
            return torch.ones(state.shape[0], classes.shape[1], 4, 5)

    p0 = Preprocess(size=(32, 40))  # the size of `images`
    Ensemble([(Spy(), other)], p0)(images, topk=1)
    img = images * torch.tensor(p0.std)[:, None, None] + torch.tensor(p0.mean)[:, None, None]
    want = torch.nn.functional.interpolate(img, size=(16, 20), mode="bilinear", antialias=True)
    assert _close(seen[0], want)
    Ensemble([(Spy(), other)], p0)(torch.nn.functional.interpolate(images, scale_factor=2.0), topk=1)
    assert seen[1].shape[-2:] == (32, 40)  # an enlarged input stays enlarged for every member


# ------------------------------------------------------------------------------------------------- resolution


class _StridedNet(nn.Module):
    """conv3 -> ReLU -> conv3 stride 2 -> ReLU -> conv3 -> conv1 head trunk; timm contract."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1),
        )  # fmt: skip
        self.fc = nn.Linear(8, 5)

    def forward_features(self, x):
        return self.trunk(x)

    def forward_head(self, f, pre_logits=False):
        p = f.mean((2, 3))
        return p if pre_logits else self.fc(p)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_dilate_doubles_the_grid_and_keeps_the_map_at_even_positions(images) -> None:
    torch.manual_seed(0)
    net = _StridedNet().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ref = CAM(net)(images, topk=2)
    out = get_method("dilate", net, INFO)(images, classes=ref.classes)
    assert ref.maps.shape[-2:] == (16, 20) and out.maps.shape[-2:] == (32, 40)
    assert _close(out.maps[..., ::2, ::2], ref.maps)  # the "a trous" identity
    assert net.trunk[2].stride == (2, 2) and net.trunk[4].dilation == (1, 1)  # the caller's model is untouched
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    with pytest.raises(UnsupportedModelError, match="stride-2 convolutions"):
        get_method("dilate", TinyGap(), INFO, stages=2)  # the second stage is the input's own grid


def test_dilate_equals_torchvision_replace_stride_with_dilation() -> None:
    import torchvision

    torch.manual_seed(0)
    plain = torchvision.models.resnet50().eval()
    ref = torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True]).eval()
    ref.load_state_dict(plain.state_dict())
    mine = dilate_last_stages(plain, size=(64, 64))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert _close(mine(x), ref(x), 1e-4)
    ref2 = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    ref2.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert _close(dilate_last_stages(plain, stages=2, size=(64, 64))(x), ref2(x), 1e-4)


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "tf_efficientnet_lite0"])
def test_dilate_efficientnet_blocks(arch: str) -> None:
    import timm

    torch.manual_seed(0)
    m = timm.create_model(arch, pretrained=False, num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    out = get_method("dilate", m, ModelInfo("e", tuple("abcde"), Preprocess(size=(64, 64))))(x, topk=1)
    assert out.maps.shape[-2:] == (4, 4) and CAM(m)(x).maps.shape[-2:] == (2, 2)
    assert bool(torch.isfinite(out.logits).all())


def test_hires_is_the_base_on_an_enlarged_input(tiny_model, images) -> None:
    out = get_method("hires", tiny_model, INFO, scale=2)(images, topk=2)
    big = torch.nn.functional.interpolate(images, size=(64, 80), mode="bilinear", antialias=True)
    ref = CAM(tiny_model)(big, topk=2)
    assert out.maps.shape[-2:] == (32, 40) and out.input_size == (32, 40)
    assert _close(out.maps, ref.maps) and torch.equal(out.classes, ref.classes)
    own = get_method("hires", tiny_model, INFO, scale=2, logits="input")(images, topk=2)
    plain = CAM(tiny_model)(images, topk=2)
    assert torch.equal(own.logits, plain.logits) and torch.equal(own.classes, plain.classes)
    assert _close(own.maps, CAM(tiny_model)(big, classes=plain.classes).maps)


# ------------------------------------------------------------------------------------------------- agnostic maps


def test_pca_is_the_first_principal_component_signed_by_the_class_map(tiny_model, images) -> None:
    cam = CAM(tiny_model)(images, topk=3)
    out = get_method("pca", tiny_model, INFO)(images, topk=3)
    assert out.maps.shape == cam.maps.shape and torch.equal(out.classes, cam.classes)
    feats, _ = CAM(tiny_model).forward(images)
    for i in range(images.shape[0]):
        x = feats[i].detach().flatten(1).T  # [hw, K]
        xc = x - x.mean(0)
        v = torch.linalg.svd(xc, full_matrices=False).Vh[0]
        a = (xc @ v).reshape(feats.shape[-2:])
        for j in range(3):
            m = out.maps[i, j]
            assert _close(m, a, 1e-4) or _close(m, -a, 1e-4)
            assert float((m * cam.maps[i, j]).sum()) >= 0
        assert abs(float(out.maps[i, 0].mean())) < 1e-4  # centred
    mass = get_method("pca", tiny_model, INFO, sign="mass")(images, topk=1)
    mu = feats.detach().flatten(2).mean(2)
    maps, _, vv = principal_maps(feats)
    s = torch.sign((mu * vv).sum(1))
    assert _close(mass.maps[:, 0], maps * s[:, None, None], 1e-5)


def test_ddt_on_one_image_or_fitted_on_it_is_pca(tiny_model, images) -> None:
    pca = get_method("pca", tiny_model, INFO)(images[:1], topk=2)
    ddt = get_method("ddt", tiny_model, INFO)
    assert _close(ddt(images[:1], topk=2).maps, pca.maps, 1e-4)
    ddt.fit([images[:1]])
    assert _close(ddt(images[:1], topk=2).maps, pca.maps, 1e-3)
    both = ddt(images, topk=2)  # fitted: batch-independent
    assert _close(both.maps[:1], pca.maps, 1e-3)


def test_cam_plus_pca_combines_normalised_maps(tiny_model, images) -> None:
    cam = CAM(tiny_model)(images, topk=2)
    pca = get_method("pca", tiny_model, INFO)(images, topk=2)
    a, b = normalize_maps(cam.maps, mode="minmax"), normalize_maps(pca.maps, mode="minmax")
    prod = get_method("cam+pca", tiny_model, INFO)(images, topk=2)
    assert _close(prod.maps, a * b) and torch.equal(prod.logits, cam.logits)
    mean = get_method("cam+pca", tiny_model, INFO, combine="mean", weight=0.25)(images, topk=2)
    assert _close(mean.maps, 0.25 * a + 0.75 * b)
    with pytest.raises(CamlocValueError, match=r"weight in \[0, 1\]"):
        get_method("cam+pca", tiny_model, INFO, weight=2)


# ------------------------------------------------------------------------------------------------- adapters


def test_gradcam_on_a_gap_linear_head_is_relu_cam_over_hw(tiny_model, images) -> None:
    cam = CAM(tiny_model)(images, topk=3)
    h, w = cam.maps.shape[-2:]
    out = get_method("gradcam", tiny_model, INFO)(images, topk=3)
    assert torch.equal(out.classes, cam.classes) and _close(out.logits, cam.logits)
    assert _close(out.maps * (h * w), cam.maps.clamp(min=0), 1e-4)
    # Layer-CAM: ReLU(sum_k ReLU(w_ck / hw) f_k) for the same head
    feats, _ = CAM(tiny_model).forward(images)
    wpos = tiny_model.fc.weight.clamp(min=0)[cam.classes]  # [N, m, K]
    want = torch.einsum("nmk,nkhw->nmhw", wpos, feats.detach()).clamp(min=0) / (h * w)
    assert _close(get_method("layercam", tiny_model, INFO)(images, topk=3).maps, want, 1e-4)


def test_other_adapters_run_and_leave_the_model_as_it_was(tiny_model, images) -> None:
    tiny_model.train()
    tiny_model.fc.weight.requires_grad_(False)
    flags = [(m, m.training) for m in tiny_model.modules()]
    for name in ("gradcam++", "scorecam", "eigencam", "gradcam"):
        out = get_method(name, tiny_model, INFO)(images, topk=2)
        assert isinstance(out, CamResult) and out.maps.shape[:2] == (3, 2) and bool((out.maps >= 0).all())
        assert all(m.training == t for m, t in flags)
        assert all(p.grad is None for p in tiny_model.parameters())
        assert not tiny_model.fc.weight.requires_grad and tiny_model.fc.bias.requires_grad
    eig = get_method("eigencam", tiny_model, INFO)(images, topk=2)
    assert eig.maps.shape[-2:] == (32, 40) and float(eig.maps.max()) <= 1.0 + 1e-6


def test_a_missing_compare_extra_names_the_install_line(tiny_model, monkeypatch) -> None:
    import importlib

    from camloc.methods import adapters

    real = importlib.import_module

    def no_libraries(name, *a, **k):
        if name.startswith(("torchcam", "pytorch_grad_cam")):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(adapters.importlib, "import_module", no_libraries)
    for name in ("gradcam", "eigencam"):
        with pytest.raises(CamlocError, match=r"needs the optional package .*pip install camloc\[compare\]"):
            get_method(name, tiny_model, INFO)


# ------------------------------------------------------------------------------------------------- CLI, evaluate


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    return synthetic_run(tmp_path_factory.mktemp("methods"))


def test_cli_method_flags_end_to_end(tiny_run, tmp_path: Path, capsys) -> None:
    data, ckpt = tiny_run
    base = ["--checkpoint", str(ckpt), "--quiet", "--workers", "0", "--no-images", "--topk", "2"]
    img = str(data / "val" / "images")
    assert main(["explain", img, *base, "--out", str(tmp_path / "a")]) == 0
    assert main(["explain", img, *base, "--out", str(tmp_path / "b"), "--method", "cam"]) == 0
    res_a = (tmp_path / "a" / "results.jsonl").read_text()
    assert res_a == (tmp_path / "b" / "results.jsonl").read_text()
    assert "method" not in json.loads((tmp_path / "a" / "manifest.json").read_text())  # today's manifest
    argv = ["explain", img, *base, "--out", str(tmp_path / "c"), "--method", "multiscale",
            "--method-arg", "scales=1", "--method-arg", "flip=1"]  # fmt: skip
    assert main(argv) == 0
    man = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert man["method"] == "multiscale" and man["method_args"] == {"scales": "1", "flip": "1"}
    assert len((tmp_path / "c" / "results.jsonl").read_text().splitlines()) == 4
    capsys.readouterr()
    ev = ["evaluate", str(data / "val" / "labels.csv"), "--checkpoint", str(ckpt), "--quiet", "--json",
          "--workers", "0", "--out", str(tmp_path / "ev"), "--method", "gradcam"]  # fmt: skip
    assert main(ev) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["method"] == "gradcam" and doc["images"] == 4 and "maxboxacc_v2" in doc["metrics"]
    assert main([*ev[:-2], "--method", "bogus"]) == 2
    assert "`--method` must be one of cam, backprop" in capsys.readouterr().err
    assert main([*ev[:-2], "--method", "flip", "--method-arg", "scale=2"]) == 2
    assert "`--method-arg` must be parameters of method 'flip'" in capsys.readouterr().err


def test_evaluate_takes_a_name_or_a_ready_producer(tiny_run) -> None:
    from camloc.checkpoint import load_checkpoint
    from camloc.data.annotations import read_dataset
    from camloc.evaluate import evaluate_samples

    data, ckpt = tiny_run
    model, info = load_checkpoint(ckpt)
    samples = list(read_dataset(data / "val" / "labels.csv").samples)
    by_name = evaluate_samples(samples, model, info, method="pca", workers=0)
    ready = evaluate_samples(samples, model, info, method=get_method("pca", model, info), workers=0)
    assert by_name.metrics == ready.metrics
    cam = evaluate_samples(samples, model, info, workers=0)
    assert cam.metrics == evaluate_samples(samples, model, info, method=CAM(model), workers=0).metrics
    with pytest.raises(CamlocValueError, match="`method_args` must be empty"):
        evaluate_samples(samples, model, info, method=CAM(model), method_args={"a": 1}, workers=0)
