"""Faithfulness metrics (camloc.faithfulness) on hand-computed cases, the accumulator, and ``evaluate --faithfulness``.

The hand-made "model" is linear in the pixels through a softmax: ``logits = [s(x), 0]`` with ``s`` the sum of the
pixels averaged over the channels, so ``p(class 0) = sigmoid(s)`` and every curve point is a sigmoid of a sum of the
pixel values left in the image (written out below).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from camloc.data.annotations import Sample
from camloc.errors import CamlocValueError
from camloc.evaluate import evaluate_samples
from camloc.faithfulness import (
    Faithfulness,
    FaithfulnessConfig,
    average_drop_increase,
    baseline_images,
    box_union_mask,
    curve_auc,
    deletion_insertion,
    energy_pointing_game,
    explanation_images,
    pixel_fractions,
    pixel_order,
    pointing_game,
)
from camloc.models.registry import ModelInfo, Preprocess
from conftest import BrightSpot


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


class PixelSum(nn.Module):
    """logits = [mean over channels of the sum over pixels, 0]; records the batch size of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(int(x.shape[0]))
        s = x.sum((2, 3)).mean(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def _image(values) -> torch.Tensor:
    """A [1, 3, H, W] image whose three channels all hold ``values [H, W]``."""
    v = torch.tensor(values, dtype=torch.float32)
    return v.expand(1, 3, *v.shape).clone()


# a 2x2 image: pixel values 1, -1 / 0.5, 0; the map orders them p(0,0), p(1,0), p(1,1), p(0,1)
X = _image([[1.0, -1.0], [0.5, 0.0]])
MAP = torch.tensor([[[0.9, 0.1], [0.5, 0.3]]])
CLS = torch.tensor([0])


def test_pixel_order_and_fractions():
    assert pixel_order(MAP).tolist() == [[0, 3, 1, 2]]  # rank of each pixel in raster order
    assert pixel_order(torch.zeros(1, 2, 2)).tolist() == [[0, 1, 2, 3]]  # ties: raster order
    np.testing.assert_allclose(pixel_fractions(4, 4), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(pixel_fractions(4, 3), [0, 0.25, 0.75, 1])  # k_i = round(i * 4 / 3)


def test_deletion_and_insertion_by_hand():
    model = PixelSum()
    r = deletion_insertion(model, X, MAP, CLS, steps=4, deletion_baseline="zero", insertion_baseline="zero")
    # deletion: sums left after removing 0, 1, 2, 3, 4 pixels in map order: 0.5, -0.5, -1, -1, 0
    want_del = [sig(0.5), sig(-0.5), sig(-1.0), sig(-1.0), sig(0.0)]
    # insertion into zeros: 0, 1, 1.5, 1.5, 0.5
    want_ins = [sig(0.0), sig(1.0), sig(1.5), sig(1.5), sig(0.5)]
    np.testing.assert_allclose(r.deletion[0], want_del, atol=1e-6)
    np.testing.assert_allclose(r.insertion[0], want_ins, atol=1e-6)
    np.testing.assert_allclose(r.fractions, [0, 0.25, 0.5, 0.75, 1])
    # trapezoid over [0, 1] in quarters: 0.25 * (y0 / 2 + y1 + y2 + y3 + y4 / 2)
    assert r.deletion_auc[0] == pytest.approx(0.369163, abs=1e-6)
    assert r.insertion_auc[0] == pytest.approx(0.731859, abs=1e-6)
    # the unperturbed image is run once (reference), then 4 deletion and 4 insertion images
    assert sum(model.calls) == 1 + 8


def test_mean_baseline_and_uneven_steps():
    # the image's channel means are 0.125, so the "mean" baseline has a pixel sum of 0.5
    r = deletion_insertion(PixelSum(), X, MAP, CLS, steps=4, deletion_baseline="mean", insertion_baseline="mean")
    np.testing.assert_allclose(r.insertion[0], [sig(0.5), sig(1.375), sig(1.75), sig(1.625), sig(0.5)], atol=1e-6)
    np.testing.assert_allclose(r.deletion[0], [sig(0.5), sig(-0.375), sig(-0.75), sig(-0.625), sig(0.5)], atol=1e-6)
    # 3 steps over 4 pixels remove 1, then 3, then 4 pixels: fractions 0, 1/4, 3/4, 1
    r3 = deletion_insertion(PixelSum(), X, MAP, CLS, steps=3, deletion_baseline="zero", insertion_baseline="zero")
    np.testing.assert_allclose(r3.deletion[0], [sig(0.5), sig(-0.5), sig(-1.0), sig(0.0)], atol=1e-6)
    want = 0.25 * (sig(0.5) + sig(-0.5)) / 2 + 0.5 * (sig(-0.5) + sig(-1.0)) / 2 + 0.25 * (sig(-1.0) + 0.5) / 2
    assert r3.deletion_auc[0] == pytest.approx(want, abs=1e-6)


def test_curve_auc_is_the_trapezoid_rule():
    f = np.array([0, 0.25, 0.75, 1.0])
    assert curve_auc([[1, 1, 1, 1], [0, 1, 1, 0]], f).tolist() == pytest.approx([1.0, 0.25 / 2 + 0.5 + 0.25 / 2])
    with pytest.raises(CamlocValueError, match="`curves` must be"):
        curve_auc([[1, 1]], f)


def test_blur_baseline_is_rise_gaussian():
    const = torch.full((1, 3, 7, 9), 0.3)
    torch.testing.assert_close(baseline_images(const, "blur"), const)  # replicate padding keeps a flat image flat
    delta = torch.zeros(1, 3, 21, 21)
    delta[0, :, 10, 10] = 1.0
    k = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 5.0**2))
    k /= k.sum()
    out = baseline_images(delta, "blur")[0, 0].numpy()
    np.testing.assert_allclose(out[5:16, 5:16], np.outer(k, k), atol=1e-7)  # the 11x11, sigma-5 kernel itself
    assert out[:5].max() == 0.0  # it reaches 5 pixels only
    torch.testing.assert_close(baseline_images(X, torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1))[0, :, 0, 0],
                               torch.tensor([1.0, 2.0, 3.0]))  # fmt: skip
    with pytest.raises(CamlocValueError, match="`baseline` must be one of"):
        baseline_images(X, "noise")  # type: ignore[arg-type]


def test_chunks_bound_each_model_call_and_change_nothing():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 5, 6, generator=g)
    maps = torch.rand(3, 5, 6, generator=g)
    cls = torch.tensor([0, 1, 0])
    big, small = PixelSum(), PixelSum()
    a = deletion_insertion(big, x, maps, cls, steps=7, chunk_size=1000)
    b = deletion_insertion(small, x, maps, cls, steps=7, chunk_size=4)
    np.testing.assert_allclose(a.deletion, b.deletion, atol=1e-6)
    np.testing.assert_allclose(a.insertion, b.insertion, atol=1e-6)
    assert max(small.calls) <= 4 and sum(small.calls) == 3 * (2 * 7 + 1)
    assert len(big.calls) == 3  # the reference, then deletion and insertion each in one call
    # class 1's probability is 1 - class 0's
    assert a.deletion[1, 0] == pytest.approx(1 - sig(float(x[1].sum(dim=(1, 2)).mean())), abs=1e-6)


def test_bad_inputs_name_the_argument():
    with pytest.raises(CamlocValueError, match="`maps` must be a tensor \\[N, H, W\\]"):
        deletion_insertion(PixelSum(), X, torch.zeros(1, 3, 3), CLS)
    with pytest.raises(CamlocValueError, match="`classes` must be"):
        deletion_insertion(PixelSum(), X, MAP, torch.tensor([0, 1]))
    with pytest.raises(CamlocValueError, match="`steps` must be >= 1"):
        deletion_insertion(PixelSum(), X, MAP, CLS, steps=0)
    with pytest.raises(CamlocValueError, match="`deletion_baseline` must be one of"):
        FaithfulnessConfig(deletion_baseline="black")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- Average Drop


def _three_images() -> tuple[torch.Tensor, torch.Tensor]:
    """1x2 images (normalised with mean = std = 0.5, so pixel = (x + 1) / 2) and their maps."""
    x = torch.cat([_image([[1.0, -1.0]]), _image([[1.0, 1.0]]), _image([[-1.0, 0.0]])])
    maps = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]], [[1.0, 3.0]]])  # min-max: [1, 0], [0, 1], [0, 1]
    return x, maps


def test_explanation_images_in_both_spaces():
    x, maps = _three_images()
    e = explanation_images(x, maps, mean=(0.5,) * 3, std=(0.5,) * 3, space="pixel")
    # pixels [1, 0] * [1, 0] = [1, 0] -> x [1, -1]; [1, 1] * [0, 1] -> [0, 1] -> [-1, 1]; [0, .5] * [0, 1] -> same
    torch.testing.assert_close(e[:, 0, 0], torch.tensor([[1.0, -1.0], [-1.0, 1.0], [-1.0, 0.0]]))
    n = explanation_images(x, maps, mean=(0.5,) * 3, std=(0.5,) * 3, space="normalized")
    torch.testing.assert_close(n[:, 0, 0], torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))


def test_average_drop_and_increase_by_hand():
    x, maps = _three_images()
    cls = torch.tensor([0, 0, 0])
    # Y = sigmoid of the pixel sums 0, 2, -1
    px = average_drop_increase(PixelSum(), x, maps, cls, mean=(0.5,) * 3, std=(0.5,) * 3, space="pixel")
    np.testing.assert_allclose(px.full, [0.5, sig(2), sig(-1)], atol=1e-6)
    np.testing.assert_allclose(px.masked, [0.5, 0.5, sig(-1)], atol=1e-6)  # sums 0, 0, -1
    np.testing.assert_allclose(px.drop, [0, (sig(2) - 0.5) / sig(2), 0], atol=1e-6)
    assert px.average_drop == pytest.approx(0.432332 / 3, abs=1e-6)
    assert px.increase.tolist() == [False, False, False] and px.increase_in_confidence == 0
    nz = average_drop_increase(PixelSum(), x, maps, cls, mean=(0.5,) * 3, std=(0.5,) * 3, space="normalized")
    np.testing.assert_allclose(nz.masked, [sig(1), sig(1), 0.5], atol=1e-6)  # sums 1, 1, 0
    assert nz.average_drop == pytest.approx(0.170003 / 3, abs=1e-6)
    assert nz.increase.tolist() == [True, False, True] and nz.increase_in_confidence == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------- pointing games


def _peak(h: int = 20, w: int = 40, row: int = 5, col: int = 10) -> torch.Tensor:
    m = torch.zeros(1, h, w)
    m[0, row, col] = 1.0
    return m  # its maximum's centre is (col + 0.5, row + 0.5) = (10.5, 5.5)


def test_pointing_game_tolerance_at_its_edge():
    m = _peak()
    box = lambda x0, y0, x1, y1: [np.array([[x0, y0, x1, y1]], np.float64)]  # noqa: E731
    assert pointing_game(m, box(25.5, 0, 30, 20)).tolist() == [True]  # 15 px to the right: hit
    assert pointing_game(m, box(26.5, 0, 30, 20)).tolist() == [False]  # 16 px: miss
    assert pointing_game(m, box(0, 0, 5, 20), tolerance=5.5).tolist() == [True]  # left side: 10.5 - 5
    assert pointing_game(m, box(8, 2, 12, 9)).tolist() == [True]  # inside
    assert pointing_game(m, box(19.5, 17.5, 30, 20)).tolist() == [True]  # diagonal 9, 12 -> 15
    assert pointing_game(m, box(19.5, 18.5, 30, 20)).tolist() == [False]  # 9, 13 -> 15.8
    # the network frame is half the original image: 15 original pixels are 7.5 network pixels
    assert pointing_game(m, box(18.0, 0, 30, 20), scale=0.5).tolist() == [True]
    assert pointing_game(m, box(18.5, 0, 30, 20), scale=0.5).tolist() == [False]
    # anisotropic (sx, sy): 15 px horizontally is 15 network px, vertically 7.5
    assert pointing_game(m, box(0, 13.0, 40, 20), scale=(1.0, 0.5)).tolist() == [True]
    assert pointing_game(m, box(0, 13.5, 40, 20), scale=(1.0, 0.5)).tolist() == [False]
    # any of several boxes; a batch with per-image scales
    two = [np.array([[35, 15, 40, 20], [25.5, 0, 30, 6]], np.float64)]
    assert pointing_game(m, two).tolist() == [True]
    assert pointing_game(m, [two[0][:1]]).tolist() == [False]
    mm = torch.cat([m, m])
    boxes = [np.array([[18.0, 0, 30, 20]]), np.array([[18.0, 0, 30, 20]])]
    assert pointing_game(mm, boxes, scale=[[0.5, 0.5], [1.0, 1.0]]).tolist() == [True, True]  # 15, 7.5 px
    assert pointing_game(mm, boxes, scale=[[0.5, 0.5], [0.25, 0.25]]).tolist() == [True, False]  # 15, 30 px


def test_pointing_game_ties_and_bad_boxes():
    flat = torch.zeros(1, 4, 4)  # ties: the first pixel, centre (0.5, 0.5)
    assert pointing_game(flat, [np.array([[15.5, 0, 16, 1]])]).tolist() == [True]
    assert pointing_game(flat, [np.array([[16.0, 0, 17, 1]])]).tolist() == [False]
    with pytest.raises(CamlocValueError, match="`gt_boxes` must be at least one box per image"):
        pointing_game(flat, [np.zeros((0, 4))])
    with pytest.raises(CamlocValueError, match="`scale` must be"):
        pointing_game(flat, [np.array([[0, 0, 1, 1]])], scale=0)


def test_energy_pointing_game_by_hand():
    m = torch.full((1, 4, 4), -2.0)
    m[0, :2, :2] = 4.0  # 16 inside the box
    m[0, 3, :] = 1.0  # 4 outside
    box = [np.array([[0, 0, 2.4, 2.4]])]  # pixel centres 0.5 and 1.5 are inside, 2.5 is not
    assert energy_pointing_game(m, box)[0] == pytest.approx(16 / 20)
    # min-max: (v + 2) / 6 -> 1 inside (4 pixels), 0.5 on the last row, 0 elsewhere
    assert energy_pointing_game(m, box, energy="minmax")[0] == pytest.approx(4 / 6)
    assert energy_pointing_game(torch.full((1, 4, 4), -1.0), box)[0] == 0.0  # no positive energy
    assert energy_pointing_game(m, [np.array([[0, 0, 2.4, 2.4], [0, 3, 4, 4]])])[0] == pytest.approx(1.0)
    assert box_union_mask(np.array([[0, 0, 2.5, 2]]), (4, 4)).sum() == 4  # x < 2.5 keeps centres 0.5, 1.5


# ---------------------------------------------------------------------------------------------- accumulator


def test_accumulator_equals_the_batch_functions():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, 6, 8, generator=g)
    maps = torch.randn(5, 6, 8, generator=g)
    cls = torch.tensor([0, 1, 1, 0, 1])
    boxes = [np.array([[1, 1, 4, 5]]), np.zeros((0, 4)), np.array([[0, 0, 8, 2], [5, 3, 8, 6]]),
             np.array([[2, 2, 3, 3]]), np.zeros((0, 4))]  # fmt: skip
    scale = [[0.2, 0.2]] * 5
    mean, std = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
    cfg = FaithfulnessConfig(steps=6, deletion_baseline="blur", insertion_baseline="mean", chunk_size=5)
    acc = Faithfulness(cfg, mean=mean, std=std)
    rows = acc.update(PixelSum(), x[:2], maps[:2], cls[:2], boxes[:2], scale=scale[:2])
    rows += acc.update(PixelSum(), x[2:], maps[2:], cls[2:], boxes[2:], scale=scale[2:])
    res = acc.compute()
    di = deletion_insertion(PixelSum(), x, maps, cls, steps=6, deletion_baseline="blur", insertion_baseline="mean")
    ad = average_drop_increase(PixelSum(), x, maps, cls, mean=mean, std=std)
    b = [0, 2, 3]
    pg = pointing_game(maps[b], [boxes[i] for i in b], scale=0.2)
    ep = energy_pointing_game(maps[b], [boxes[i] for i in b])
    want = {
        "deletion_auc": di.deletion_auc.mean(),
        "insertion_auc": di.insertion_auc.mean(),
        "average_drop": ad.average_drop,
        "increase_in_confidence": ad.increase_in_confidence,
        "pointing_game": pg.mean(),
        "energy_pointing_game": ep.mean(),
    }
    assert res.metrics == pytest.approx(want, abs=1e-9)
    assert res.n_images == 5 and res.n_box_images == 3
    np.testing.assert_allclose(res.deletion_curve, di.deletion.mean(0), atol=1e-9)
    np.testing.assert_allclose(res.insertion_curve, di.insertion.mean(0), atol=1e-9)
    assert [r["pointing_game"] for r in rows] == [bool(pg[0]), None, bool(pg[1]), bool(pg[2]), None]
    assert [r["deletion_auc"] for r in rows] == pytest.approx(di.deletion_auc.tolist())
    acc.reset()
    with pytest.raises(CamlocValueError, match="`Faithfulness` must be updated"):
        acc.compute()


# ---------------------------------------------------------------------------------------------- evaluate / CLI


def _bright() -> BrightSpot:
    """The brightness model with logits 4 (p, -p) + (-2, 2)."""
    return BrightSpot(4.0, 2.0).eval()


INFO = ModelInfo("bright", ("bright", "dark"), Preprocess(size=(16, 16), mean=(0.5,) * 3, std=(0.5,) * 3))


def _write(tmp: Path, name: str, box: tuple[int, int, int, int], size=(32, 24)) -> Path:
    a = np.zeros((size[1], size[0], 3), np.uint8)
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1] = 255
    p = tmp / name
    Image.fromarray(a).save(p)
    return p


def _samples(tmp: Path) -> list[Sample]:
    return [
        Sample("a", _write(tmp, "a.png", (4, 4, 20, 20)), 0, np.array([[4, 4, 20, 20]], np.float32)),
        # the bright square is far (> 15 original px) from the GT box: a miss
        Sample("b", _write(tmp, "b.png", (0, 0, 6, 6)), 0, np.array([[24, 18, 32, 24]], np.float32)),
    ]


def test_evaluate_samples_with_faithfulness(tmp_path: Path):
    cfg = FaithfulnessConfig(steps=8, tolerance=15.0)
    res = evaluate_samples(_samples(tmp_path), _bright(), INFO, batch_size=2, workers=0, faithfulness=cfg)
    f = res.faithfulness
    assert f is not None and f.n_images == 2 and f.n_box_images == 2
    rows = [r["faithfulness"] for r in res.per_image]
    assert [r["pointing_game"] for r in rows] == [True, False]
    assert rows[0]["energy_pointing_game"] > 0.85  # the CAM energy is in the square (its resized edges blur)
    # p(bright) = sigmoid(8 mean(f) - 4), f = brightness + 1 in [0, 2]: every pixel deleted to the zero baseline
    # (grey, f = 1) gives sigmoid(4); step 0 is the image itself
    assert f.deletion_curve[-1] == pytest.approx(sig(4.0), abs=1e-6)
    assert f.deletion_curve[0] == pytest.approx(np.mean([r["confidence"] for r in rows]), abs=1e-9)
    assert f.insertion_curve[-1] == pytest.approx(f.deletion_curve[0], abs=1e-9)
    assert f.metrics["deletion_auc"] == pytest.approx(np.mean([r["deletion_auc"] for r in rows]))
    assert f.metrics["pointing_game"] == 0.5
    plain = evaluate_samples(_samples(tmp_path), _bright(), INFO, batch_size=2, workers=0)
    assert plain.faithfulness is None and "faithfulness" not in plain.per_image[0]
    assert plain.metrics == {k: v for k, v in res.metrics.items()}  # the other numbers do not move


def test_cli_evaluate_faithfulness(tmp_path: Path, monkeypatch, capsys):
    import camloc.cli
    from camloc.cli import main

    samples = _samples(tmp_path)
    csv = tmp_path / "boxes.csv"
    csv.write_text("file,class_idx,x0,y0,x1,y1\n" + "".join(
        f"{s.path.name},{s.class_idx},{','.join(str(int(v)) for v in s.boxes[0])}\n" for s in samples))  # fmt: skip
    monkeypatch.setattr(camloc.cli, "load_model_from_args", lambda args: (_bright(), INFO))
    out = tmp_path / "ev"
    argv = ["evaluate", str(csv), "--format", "csv", "--out", str(out), "--quiet", "--json", "--workers", "0"]
    assert main([*argv, "--faithfulness", "--faithfulness-steps", "8"]) == 0
    doc = json.loads(capsys.readouterr().out)
    fa = doc["faithfulness"]
    assert fa["explained_class"] == "true class" and fa["steps"] == 8 and len(fa["curves"]["deletion"]) == 9
    assert (fa["deletion_baseline"], fa["insertion_baseline"]) == ("zero", "blur")
    assert doc["metrics"]["pointing_game"] == 0.5 == fa["metrics"]["pointing_game"]
    assert set(fa["metrics"]) == {"deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence",
                                  "pointing_game", "energy_pointing_game"}  # fmt: skip
    assert json.loads((out / "metrics.json").read_text())["faithfulness"] == fa
    report = (out / "report.md").read_text()
    assert "## Faithfulness (map of the true class)" in report and "| Pointing game (hit rate) | 50.00 |" in report
    assert main([*argv, "--faithfulness", "--faithfulness-baseline", "mean"]) == 0
    fa2 = json.loads(capsys.readouterr().out)["faithfulness"]
    assert (fa2["deletion_baseline"], fa2["insertion_baseline"], fa2["steps"]) == ("mean", "mean", 50)
    assert main(argv) == 0
    assert "faithfulness" not in json.loads(capsys.readouterr().out)
