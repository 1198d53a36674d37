"""Localize-then-classify (camloc.zoom): crop rectangles, the combination rule, crops of the original image, and
``--zoom`` through fit, explain and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import camloc
from camloc.cli import main
from camloc.errors import CamlocTypeError, CamlocValueError
from camloc.methods.base import MapMethod
from camloc.models.info import ModelInfo, Preprocess
from camloc.pipeline import ImagePipeline
from camloc.zoom import Cropper, Zoom, combine_features, combine_logits, zoom_box


def test_zoom_box_hand_computed() -> None:
    # a 20 x 10 box grows by 10 % of its width left/right (2 px) and of its height above/below (1 px)
    np.testing.assert_allclose(zoom_box([10, 10, 30, 20], (100, 50), margin=0.1), [8, 9, 32, 21])
    np.testing.assert_allclose(zoom_box([0, 40, 20, 50], (100, 50), margin=0.5), [0, 35, 30, 50])  # clipped
    np.testing.assert_allclose(zoom_box([0, 0, 0, 0], (64, 48)), [0, 0, 64, 48])  # no localization: whole image
    np.testing.assert_allclose(zoom_box([5, 5, 5, 9], (64, 48)), [0, 0, 64, 48])  # no area
    np.testing.assert_allclose(zoom_box([[1, 2, 3, 4]], (10, 10), margin=0.0), [[1, 2, 3, 4]])  # batched, shape kept
    with pytest.raises(CamlocValueError, match="`margin` must be"):
        zoom_box([0, 0, 1, 1], (4, 4), margin=-0.1)
    with pytest.raises(CamlocValueError, match="`box` must be"):
        zoom_box([0, 0, 1], (4, 4))


def test_combination_is_mean_log_softmax_and_the_head_on_mean_features() -> None:
    g = torch.Generator().manual_seed(0)
    whole, crop = (
        torch.randn(4, 7, generator=g, dtype=torch.float64),
        torch.randn(4, 7, generator=g, dtype=torch.float64),
    )
    z = combine_logits(whole, crop)
    ref = (whole.log_softmax(1) + crop.log_softmax(1)) / 2
    np.testing.assert_allclose(z.softmax(1).numpy(), ref.softmax(1).numpy(), atol=1e-12)  # same probabilities
    d = (z - ref).numpy()
    np.testing.assert_allclose(d, d[:, :1].repeat(7, 1), atol=1e-12)  # a per-image constant apart
    # a linear head: the mean of its logits is the head on the mean of the pooled features (what fit --zoom fits)
    w, b = np.random.default_rng(0).normal(size=(3, 5)), np.array([0.5, -1.0, 2.0])
    pw, pc = np.random.default_rng(1).normal(size=(2, 5)), np.random.default_rng(2).normal(size=(2, 5))
    lw, lc = torch.from_numpy(pw @ w.T + b), torch.from_numpy(pc @ w.T + b)
    on_mean = combine_features(pw, pc, crop_weight=0.25).astype(np.float64) @ w.T + b
    np.testing.assert_allclose(combine_logits(lw, lc, crop_weight=0.25).numpy(), on_mean, atol=1e-5)
    with pytest.raises(CamlocValueError, match="`crop` must be"):
        combine_logits(whole, crop[:, :3])
    with pytest.raises(CamlocValueError, match="`crop_weight` must be"):
        combine_logits(whole, crop, crop_weight=1.5)


PRE = Preprocess(size=(40, 40), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="nearest")
RED = (220, 30, 30)


def _square_photo(path: Path, size: int = 80, box: tuple[int, int, int, int] = (16, 24, 48, 56)) -> Path:
    img = np.full((size, size, 3), 128, np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = RED
    Image.fromarray(img).save(path)
    return path


class _Colour(nn.Module):
    """Features = the input itself (3 channels); class 0 = red minus green minus blue, class 1 = the opposite."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, 1.0]]))
            self.fc.bias.copy_(torch.tensor([0.25, -0.25]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        p = x.mean(dim=(2, 3))
        return p if pre_logits else self.fc(p)

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def test_zoom_crops_the_top1_box_of_the_original_image(tmp_path: Path) -> None:
    # an 80 x 80 photo, a red square over original columns 16..47, rows 24..55; the network sees it at 40 x 40
    photo = _square_photo(tmp_path / "sq.png")
    model, info = _Colour().eval(), ModelInfo("colour", ("red", "grey"), PRE)
    item = ImagePipeline(PRE)(photo)
    zoom = Zoom(model, info, margin=0.0)
    out = zoom(item.tensor[None], [photo], [item.geometry])
    assert out.top1.tolist() == [1]  # the whole image is mostly grey: class 1 wins ...
    # ... whose map (-r + g + b) is positive off the square: its box is the whole image, and so is the crop
    np.testing.assert_allclose(out.crop_boxes, [[0, 0, 80, 80]])
    # the red class's map is positive exactly on the square: ask for it through a model that prefers red
    m2 = _Colour().eval()
    with torch.no_grad():
        m2.fc.bias.copy_(torch.tensor([10.0, -10.0]))
    z2 = Zoom(m2, info, margin=0.0)(item.tensor[None], [photo], [item.geometry])
    assert z2.top1.tolist() == [0]
    np.testing.assert_allclose(z2.boxes, [[8, 12, 24, 28]])  # network frame (half the original)
    np.testing.assert_allclose(z2.crop_boxes, [[16, 24, 48, 56]])  # original pixels
    red = torch.tensor(RED, dtype=torch.float32) / 255
    np.testing.assert_allclose(z2.crop_features.numpy(), red[None].numpy(), atol=1e-6)  # the crop is all red
    np.testing.assert_allclose(z2.crop_logits.numpy(), m2.fc(red[None]).detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(z2.logits.numpy(), ((z2.whole_logits + z2.crop_logits) / 2).numpy(), atol=1e-6)
    z3 = Zoom(m2, info, margin=0.25)(item.tensor[None], [photo], [item.geometry])  # 32 px box: + 8 px each side
    np.testing.assert_allclose(z3.crop_boxes, [[8, 16, 56, 64]])
    # the cam_result view: classes and scores from the combined logits, maps of the whole image
    res, _ = Zoom(m2, info, margin=0.0).cam_result(item.tensor[None], [photo], [item.geometry], topk=2)
    np.testing.assert_allclose(res.scores.numpy(), z2.logits.softmax(1).sort(descending=True).values.numpy(), atol=1e-6)
    plain = camloc.CAM(m2)(item.tensor[None], classes=res.classes)
    np.testing.assert_allclose(res.maps.numpy(), plain.maps.numpy())


def test_cropper_decodes_enough_pixels(tmp_path: Path) -> None:
    # a 400 x 400 JPEG: the whole image would be decoded at 1/8 scale for a 40 x 40 input; a 100 px crop needs
    # 40 / 100 of the original resolution, i.e. at most a 1/2 reduction
    arr = np.zeros((400, 400, 3), np.uint8)
    arr[:, ::2] = 255  # one-pixel stripes: visible only at full or half resolution
    p = tmp_path / "stripes.jpg"
    Image.fromarray(arr).save(p, quality=95)
    g = ImagePipeline(PRE).geometry((400, 400))
    t = Cropper(PRE.replace(interpolation="bilinear"))(p, [100, 100, 200, 200], g)
    assert t.shape == (3, 40, 40)
    whole = ImagePipeline(PRE.replace(interpolation="bilinear"))(p)
    assert whole.image.size == (50, 50)  # the whole image is draft-decoded at 1/8 ...
    assert float(t.mean()) == pytest.approx(0.5, abs=0.06)  # ... the crop keeps the stripes' mean brightness


# ------------------------------------------------------------------------------ fit / explain / evaluate --zoom


def _square_set(root: Path, n: int, seed: int = 0) -> Path:
    """camloc CSV: 'red' and 'blue' squares (a third of the side) on grey noise, 60 x 60, boxes given."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("red\nblue\n")
    for split, count in (("train", n), ("val", n // 2)):
        (root / split / "images").mkdir(parents=True)
        rows = ["file,class_idx,x0,y0,x1,y1"]
        for ci, colour in enumerate((RED, (40, 60, 230))):
            for j in range(count):
                img = rng.integers(90, 160, (60, 60, 3)).astype(np.uint8)
                s = int(rng.integers(14, 22))
                x, y = (int(v) for v in rng.integers(0, 60 - s, 2))
                img[y : y + s, x : x + s] = colour
                f = f"images/{ci}_{j:03d}.png"
                Image.fromarray(img).save(root / split / f)
                rows.append(f"{f},{ci},{x},{y},{x + s},{y + s}")
        (root / split / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def zoom_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("sklearn")
    root = tmp_path_factory.mktemp("zoom")
    data = _square_set(root / "squares", n=10)
    torch.manual_seed(0)
    model, _ = camloc.create_model("tiny_gap")
    trunk = root / "tiny.pt"
    torch.save(model.state_dict(), trunk)
    run = root / "run"
    argv = ["fit", str(data), "--model", "tiny_gap", "--weights", str(trunk), "--out", str(run), "--quiet"]
    assert main([*argv, "--workers", "0", "--zoom", "--C", "0.1,1"]) == 0
    return data, run


def test_fit_zoom_report_and_evaluate_agree(zoom_run: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = zoom_run
    rep = json.loads((run / "fit_report.json").read_text())
    z = rep["zoom"]
    assert z["margin"] == 0.1 and z["crop_weight"] == 0.5 and z["stage1"]["C"] in (0.1, 1.0)
    assert 0.0 <= z["stage1"]["test_accuracy_whole_image"] <= 1.0
    # train crops (stage-1 head) and test crops (final head): two crop passes on top of the plain features
    assert rep["features"]["forwards"] == (20 + 10) + 2 * 20 + 2 * 10
    assert "zoom:" in (run / "fit_report.md").read_text()
    ck = camloc.checkpoint.read_checkpoint(run / "model.pt")
    assert ck.architecture.spec["zoom"] == {"margin": 0.1, "threshold": 0.2, "crop_weight": 0.5}
    ev = tmp_path / "ev"
    argv = ["evaluate", str(data), "--split", "val", "--checkpoint", str(run / "model.pt"), "--out", str(ev)]
    assert main([*argv, "--quiet", "--workers", "0", "--zoom"]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert m["zoom"]["margin"] == 0.1
    # the same pipeline, crops and head: evaluate --zoom's top-1 is the fit's test accuracy
    assert m["metrics"]["top1_cls"] == pytest.approx(rep["test"]["accuracy"], abs=1e-9)
    ev2 = tmp_path / "ev2"
    argv2 = ["evaluate", str(data), "--split", "val", "--checkpoint", str(run / "model.pt"), "--out", str(ev2)]
    assert main([*argv2, "--quiet", "--workers", "0"]) == 0
    m2 = json.loads((ev2 / "metrics.json").read_text())
    assert "zoom" not in m2
    # the maps are the whole image's either way: GT-known localization does not depend on --zoom
    assert m2["metrics"]["gt_known_loc"] == m["metrics"]["gt_known_loc"]
    # any map method: its maps (so its GT-known) with or without zoom; the classes from whole + crop
    ev3, ev4 = tmp_path / "ev3", tmp_path / "ev4"
    assert main([*argv2[:-1], str(ev3), "--quiet", "--workers", "0", "--zoom", "--method", "backprop"]) == 0
    assert main([*argv2[:-1], str(ev4), "--quiet", "--workers", "0", "--method", "backprop"]) == 0
    m3, m4 = (json.loads((e / "metrics.json").read_text())["metrics"] for e in (ev3, ev4))
    assert m3["gt_known_loc"] == m4["gt_known_loc"] and m3["maxboxacc_v2"] == m4["maxboxacc_v2"]


def test_explain_zoom_classes_from_combined_logits(zoom_run: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = zoom_run
    val = data / "val" / "images"
    out = tmp_path / "ex"
    argv = ["explain", str(val), "--checkpoint", str(run / "model.pt"), "--no-images", "--quiet", "--topk", "2"]
    assert main([*argv, "--out", str(out), "--zoom", "--zoom-margin", "0.2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["zoom"]["margin"] == 0.2
    recs = {Path(r["path"]).name: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    model, info = camloc.checkpoint.load_checkpoint(run / "model.pt")
    zoom = Zoom(model, info, margin=0.2)
    paths = sorted(val.glob("*.png"))[:4]
    pipe = ImagePipeline(info.preprocess)
    items = [pipe(p) for p in paths]
    z = zoom(torch.stack([i.tensor for i in items]), paths, [i.geometry for i in items])
    for p, probs in zip(paths, z.logits.softmax(1)):
        top = recs[p.name]["topk"]
        assert top[0]["class_idx"] == int(probs.argmax())
        assert top[0]["prob"] == pytest.approx(float(probs.max()), abs=1e-5)
    # with another map method the boxes are that method's (the same per class as without zoom), not the CAM's
    runs = {}
    for name, extra in (("bz", ["--zoom"]), ("b", []), ("cz", ["--zoom"])):
        method = ["--method", "backprop"] if name.startswith("b") else []
        assert main([*argv, "--out", str(tmp_path / name), *method, *extra]) == 0
        lines = (tmp_path / name / "results.jsonl").read_text().splitlines()
        runs[name] = {(r["path"], t["class_idx"]): t["box"] for r in map(json.loads, lines) for t in r["topk"]}
    same = runs["bz"].keys() & runs["b"].keys()
    assert same and all(runs["bz"][k] == runs["b"][k] for k in same)
    assert any(runs["bz"][k] != runs["cz"][k] for k in same & runs["cz"].keys())
    assert main([*argv, "--out", str(tmp_path / "bad"), "--zoom", "--zoom-margin", "-1"]) == 2


class _Block(MapMethod):
    """A map method whose logits are the CAM's and whose every map is one block (network rows 4..11, cols 20..35)."""

    name = "block"

    def __init__(self, model: nn.Module) -> None:
        self.cam = camloc.CAM(model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cam.forward(x)

    def maps(self, state: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        m = torch.zeros(classes.shape[0], classes.shape[1], 40, 40)
        m[:, :, 4:12, 20:36] = 1.0 + classes[..., None, None].float()  # distinct per class
        return m


def test_zoom_crops_at_the_top1_box_of_any_map_method(tmp_path: Path) -> None:
    photo = _square_photo(tmp_path / "sq.png")
    model, info = _Colour().eval(), ModelInfo("colour", ("red", "grey"), PRE)
    item = ImagePipeline(PRE)(photo)
    method = _Block(model)
    z = Zoom(model, info, margin=0.0, method=method)(item.tensor[None], [photo], [item.geometry])
    np.testing.assert_allclose(z.boxes, [[20, 4, 36, 12]])  # the method's box, not the CAM's (whole image)
    np.testing.assert_allclose(z.crop_boxes, [[40, 8, 72, 24]])  # original pixels (twice the network frame)
    assert z.whole_features is None  # the method's state is not the trunk's features
    ref = Zoom(model, info, margin=0.0)(item.tensor[None], [photo], [item.geometry])
    np.testing.assert_allclose(z.whole_logits.numpy(), ref.whole_logits.numpy())  # the same classifier ...
    crop = Cropper(PRE)(photo, z.crop_boxes[0], item.geometry)[None]
    np.testing.assert_allclose(z.crop_logits.numpy(), model(crop).detach().numpy(), atol=1e-6)  # ... on the crop
    res, _ = Zoom(model, info, margin=0.0, method=method).cam_result(item.tensor[None], [photo], [item.geometry])
    assert torch.equal(res.maps, method.maps(None, res.classes))  # the method's maps of the combined classes
    # a default zoom takes the method it is used with; one built for another method is refused
    plain = Zoom(model, info)
    assert plain.with_method(camloc.CAM(model)) is plain and plain.with_method(method).method is method
    with pytest.raises(CamlocValueError, match="`zoom` must be a zoom around the evaluated method"):
        Zoom(model, info, method=method).with_method(_Block(model))
    with pytest.raises(CamlocTypeError, match="`method` must be a map method"):
        Zoom(model, info, method="best")


def test_fit_zoom_refuses_flip(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    with pytest.raises(CamlocValueError, match="`flip` must be"):
        camloc.fit_linear_head(tmp_path, model="tiny_gap", zoom=True, flip=True)
