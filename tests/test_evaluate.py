"""``camloc evaluate`` end to end on a tiny hand-made data set, and the metric definitions on known cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from camloc.data.annotations import Sample
from camloc.evaluate import evaluate_samples
from camloc.models.registry import ModelInfo, Preprocess
from conftest import BrightSpot


def _write(tmp: Path, name: str, box: tuple[int, int, int, int], size=(64, 48)) -> Path:
    a = np.zeros((size[1], size[0], 3), np.uint8)
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1] = 255
    p = tmp / name
    Image.fromarray(a).save(p)
    return p


INFO = ModelInfo("bright", ("bright", "dark"), Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3))


def test_metrics_on_hand_made_images(tmp_path: Path):
    model = BrightSpot().eval()
    samples = [
        Sample("a", _write(tmp_path, "a.png", (8, 8, 40, 40)), 0, np.array([[8, 8, 40, 40]], np.float32)),
        # right class, wrong box: GT far from the bright square
        Sample("b", _write(tmp_path, "b.png", (0, 0, 16, 16)), 0, np.array([[40, 30, 64, 48]], np.float32)),
    ]
    res = evaluate_samples(samples, model, INFO, batch_size=2, workers=0)
    m = res.metrics
    assert m["top1_cls"] == 1.0 and m["top5_cls"] == 1.0
    assert m["gt_known_loc"] == 0.5 and m["top1_loc"] == 0.5 and m["top5_loc"] == 0.5
    assert m["maxboxacc"] == 0.5
    a = res.per_image[0]
    assert a["iou_gt_known"] > 0.8
    # the box is reported in original pixels (64x48 image, evaluated at 32x32)
    x0, y0, x1, y1 = a["box_gt_known"]
    assert abs(x0 - 8) <= 2 and abs(x1 - 40) <= 2 and abs(y0 - 8) <= 2 and abs(y1 - 40) <= 2
    assert a["n_gt_boxes"] == 1 and a["group_loc"] is True and res.per_image[1]["group_loc"] is False
    assert res.breakdown == {"single_box_images": 2, "multi_box_images": 0, "gt_known_loc_single_box": 0.5,
                             "gt_known_loc_multi_box": None, "group_loc_multi_box": None,
                             "multi_box_share_of_misses": 0.0}  # fmt: skip


def test_breakdown_splits_single_and_multi_box_images(tmp_path: Path):
    """One bright block over two GT instances: the group box, a miss per instance, a hit for the union."""
    model = BrightSpot().eval()
    two = np.array([[8, 8, 24, 40], [24, 8, 40, 40]], np.float32)  # the block [8, 40) x [8, 40) split in two
    samples = [
        Sample("one", _write(tmp_path, "one.png", (8, 8, 40, 40)), 0, np.array([[8, 8, 40, 40]], np.float32)),
        Sample("two", _write(tmp_path, "two.png", (8, 8, 40, 40)), 0, two),
    ]
    res = evaluate_samples(samples, model, INFO, batch_size=2, workers=0)
    assert res.metrics["gt_known_loc"] == 0.5
    assert [r["n_gt_boxes"] for r in res.per_image] == [1, 2]
    assert [r["gt_known_loc"] for r in res.per_image] == [True, False]
    assert [r["group_loc"] for r in res.per_image] == [True, True]
    b = res.breakdown
    assert b is not None and b["gt_known_loc_single_box"] == 1.0 and b["gt_known_loc_multi_box"] == 0.0
    assert b["group_loc_multi_box"] == 1.0 and b["multi_box_share_of_misses"] == 1.0


def test_pxap_with_masks_and_ignore_regions(tmp_path: Path):
    model = BrightSpot().eval()
    samples = []
    for i, box in enumerate([(8, 8, 40, 40), (20, 10, 60, 30)]):
        img = _write(tmp_path, f"m{i}.png", box)
        mask = _write(tmp_path, f"m{i}_mask.png", box)
        samples.append(Sample(f"m{i}", img, 0, np.array([box], np.float32), mask_paths=(mask,)))
    res = evaluate_samples(samples, model, INFO, workers=0)
    # the map is the brightness, the mask is the bright square: pixels are perfectly ranked
    assert res.metrics["pxap"] == pytest.approx(1.0, abs=1e-6)
    assert res.pxap_curve is not None and len(res.pxap_curve["precision"]) == len(res.pxap_curve["thresholds"])
    # a mask that disagrees with the map (the dark region) gives a low PxAP
    inv = _write(tmp_path, "inv_mask.png", (0, 0, 8, 8))
    bad = [Sample("b", samples[0].path, 0, samples[0].boxes, mask_paths=(inv,))]
    assert evaluate_samples(bad, model, INFO, workers=0).metrics["pxap"] < 0.2


def test_wrong_class_counts_for_gt_known_only(tmp_path: Path):
    model = BrightSpot().eval()
    s = Sample("a", _write(tmp_path, "a.png", (8, 8, 40, 40)), 1, np.array([[8, 8, 40, 40]], np.float32))
    res = evaluate_samples([s], model, INFO, workers=0)
    assert res.metrics["top1_cls"] == 0.0 and res.metrics["top1_loc"] == 0.0
    # the true class ('dark') map is -brightness: its box (max-normalised) is empty -> not localised
    assert res.metrics["gt_known_loc"] == 0.0


def test_cli_evaluate_writes_every_output(tmp_path: Path, capsys):
    from camloc.cli import main

    csv = tmp_path / "labels.csv"
    rows = ["file,class_idx,x0,y0,x1,y1"]
    for i in range(3):
        _write(tmp_path, f"im{i}.png", (4 + i, 4, 30, 30))
        rows.append(f"im{i}.png,0,{4 + i},4,30,30")
    csv.write_text("\n".join(rows) + "\n")
    weights = tmp_path / "w.pth"
    import timm

    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=3).state_dict(), weights)
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            str(csv),
            "--model",
            "timm:resnet18",
            "--weights",
            str(weights),
            "--out",
            str(out),
            "--quiet",
            "--json",
            "--protocol",
            "wsolevaluation",
            "--workers",
            "0",
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1 and doc["images"] == 3
    for k in ("top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known_loc", "maxboxacc", "maxboxacc_v2"):
        assert 0.0 <= doc["metrics"][k] <= 1.0
    assert len(doc["curve"]["thresholds"]) == 1000 and len(doc["curve"]["maxboxacc"]) == 1000
    assert doc["metrics"]["maxboxacc"] == pytest.approx(max(doc["curve"]["maxboxacc"]))
    assert json.loads((out / "metrics.json").read_text()) == doc
    assert len((out / "per_image.jsonl").read_text().splitlines()) == 3
    assert "MaxBoxAccV2" in (out / "report.md").read_text()
    assert doc["breakdown"]["single_box_images"] == 3 and doc["breakdown"]["multi_box_images"] == 0
    assert (out / "plots.png").stat().st_size > 0 and (out / "grid.png").stat().st_size > 0
    # backprop baseline through the same command
    assert (
        main(
            [
                "evaluate",
                str(csv),
                "--model",
                "timm:resnet18",
                "--weights",
                str(weights),
                "--out",
                str(tmp_path / "bp"),
                "--quiet",
                "--method",
                "backprop",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "bp" / "metrics.json").read_text())["method"] == "backprop"
    assert main(["evaluate", str(tmp_path / "nothing.csv"), "--quiet"]) == 2


def test_mask_only_samples_get_pxap_and_box_metrics_skip_them(tmp_path: Path):
    """wsolevaluation's OpenImages: masks and no boxes. PxAP over them; box metrics over the boxed images only."""
    model = BrightSpot().eval()
    masked = []
    for i, box in enumerate([(8, 8, 40, 40), (20, 10, 60, 30)]):
        img = _write(tmp_path, f"m{i}.png", box)
        masked.append(Sample(f"m{i}", img, 0, np.zeros((0, 4)), mask_paths=(_write(tmp_path, f"m{i}_mask.png", box),)))
    res = evaluate_samples(masked, model, INFO, workers=0)
    assert res.metrics["pxap"] == pytest.approx(1.0, abs=1e-6)  # the map is the mask: perfectly ranked pixels
    assert res.n_images == 2 and res.n_box_images == 0 and res.n_mask_images == 2 and not res.failures
    assert set(res.metrics) == {"top1_cls", "top5_cls", "pxap"} and res.metrics["top1_cls"] == 1.0
    assert np.isnan(res.maxboxacc_curve).all() and res.per_image[0]["iou_gt_known"] is None
    boxed = Sample("a", _write(tmp_path, "a.png", (8, 8, 40, 40)), 0, np.array([[8, 8, 40, 40]], np.float32))
    none = Sample("n", _write(tmp_path, "n.png", (8, 8, 40, 40)), 0, np.zeros((0, 4)))
    mixed = evaluate_samples([*masked, boxed, none], model, INFO, workers=0)
    assert mixed.n_images == 3 and mixed.n_box_images == 1 and mixed.n_mask_images == 2
    assert mixed.metrics["gt_known_loc"] == 1.0 and mixed.metrics["maxboxacc"] == 1.0  # over the boxed image
    assert mixed.failures == [{"path": str(none.path), "error": "no ground-truth box or mask"}]


def test_cli_reports_what_the_box_metrics_were_computed_over(tmp_path: Path, capsys):
    from camloc.cli_evaluate import _notes

    model = BrightSpot().eval()
    img = _write(tmp_path, "m.png", (8, 8, 40, 40))
    samples = [
        Sample("m", img, 0, np.zeros((0, 4)), mask_paths=(_write(tmp_path, "mm.png", (8, 8, 40, 40)),)),
        Sample("a", img, 0, np.array([[8, 8, 40, 40]], np.float32)),
    ]
    notes = _notes(evaluate_samples(samples, model, INFO, workers=0))
    assert notes == [
        "box metrics (top-k/GT-known localization, MaxBoxAcc, MaxBoxAccV2) over the 1 of 2 images with "
        "ground-truth boxes; the others have masks only",
        "PxAP over the 1 of 2 images with ground-truth masks",
    ]


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotation_moves_the_ground_truth_with_the_image(tmp_path: Path, orientation: int):
    """Annotations refer to the stored pixels (as ILSVRC / VOC / CUB tools read them); the image is shown and
    evaluated after its EXIF rotation, so its boxes and masks are rotated the same way."""
    model = BrightSpot().eval()
    stored = np.zeros((48, 64, 3), np.uint8)  # 64 wide, 48 high as stored
    stored[4:20, 36:60] = 255  # bright block: columns 36..59, rows 4..19 -> stored box (36, 4, 60, 20)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / "rot.png"
    Image.fromarray(stored).save(p, exif=exif.tobytes())
    mask = _write(tmp_path, "rot_mask.png", (36, 4, 60, 20))  # the mask file is in the stored frame too
    s = Sample("r", p, 0, np.array([[36, 4, 60, 20]], np.float32), mask_paths=(mask,))
    res = evaluate_samples([s], model, INFO, workers=0)
    assert res.metrics["gt_known_loc"] == 1.0 and res.per_image[0]["iou_gt_known"] > 0.8
    assert res.metrics["pxap"] == pytest.approx(1.0, abs=1e-6)
    # reported in the original (viewed, 48 x 64) frame: EXIF 6 turns the stored (x, y) into (48 - y, x)
    expected = [28.0, 36.0, 44.0, 60.0] if orientation == 6 else [4.0, 4.0, 20.0, 28.0]
    assert res.per_image[0]["gt_boxes"] == [expected]
    np.testing.assert_allclose(res.per_image[0]["box_gt_known"], expected, atol=2.0)
    # the wsolevaluation preset reads the stored pixels (no EXIF transpose), as that project's loader does
    wsol = evaluate_samples([s], model, INFO, workers=0, protocol="wsolevaluation")
    assert wsol.per_image[0]["gt_boxes"] == [[36.0, 4.0, 60.0, 20.0]] and wsol.per_image[0]["iou_gt_known"] > 0.8


@pytest.mark.parametrize(
    "spec",
    ["timm:convnext_atto", "torchvision:swin_t"],
)
def test_cli_explain_and_evaluate_modern_architectures_from_local_weights(spec: str, tmp_path: Path, capsys):
    """`--model timm:NAME|torchvision:NAME --weights FILE` works for the norm-after-pool and token families.

    The classes and probabilities the CLI reports are the model's own on the pipeline's tensor.
    """
    import camloc
    from camloc.cli import main
    from camloc.pipeline import ImagePipeline

    model, info = camloc.create_model(spec, num_classes=3)
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    csv = tmp_path / "labels.csv"
    rows = ["file,class_idx,x0,y0,x1,y1"]
    for i in range(2):
        _write(tmp_path, f"im{i}.png", (4 + i, 4, 30, 30))
        rows.append(f"im{i}.png,{i},{4 + i},4,30,30")
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "ex"
    code = main(["explain", str(tmp_path / "im0.png"), "--model", spec, "--weights", str(weights), "--topk", "2",
                 "--out", str(out), "--quiet", "--json", "--workers", "0"])  # fmt: skip
    assert code == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    x = ImagePipeline(info.preprocess)(tmp_path / "im0.png").tensor[None]
    with torch.no_grad():
        probs = model.eval()(x).softmax(1)[0]
    top = [c["class_idx"] for c in line["topk"]]
    assert top == probs.topk(2).indices.tolist()
    assert [c["prob"] for c in line["topk"]] == pytest.approx(probs.topk(2).values.tolist(), abs=1e-4)
    code = main(["evaluate", str(csv), "--model", spec, "--weights", str(weights), "--out", str(tmp_path / "ev"),
                 "--quiet", "--workers", "0"])  # fmt: skip
    assert code == 0
    doc = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert doc["images"] == 2 and 0.0 <= doc["metrics"]["gt_known_loc"] <= 1.0


def _tiny_layout(root: Path, wnids: list[str]) -> None:
    """A Tiny-ImageNet folder (wnids.txt, val/val_annotations.txt) of 64 px copies of the bundled coffee photo."""
    import camloc

    photo = Image.open(Path(camloc.__file__).parent / "assets" / "coffee.jpg").convert("RGB")
    photo = photo.crop((100, 0, 500, 400)).resize((64, 64))  # the cup, square
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rows = []
    for i, w in enumerate(wnids):
        photo.save(root / "val" / "images" / f"val_{i}.JPEG")
        rows.append(f"val_{i}.JPEG\t{w}\t8\t4\t56\t60")
    (root / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")


def test_tiny_imagenet_folder_gets_imagenet_indices_for_an_imagenet_classifier(tmp_path: Path, capsys):
    """wnids.txt order would call espresso class 0 (tench) for an ImageNet-1k model: evaluate and calibrate map
    Tiny-ImageNet's wnids to ImageNet-1k indices for such a model, keep the folder's order for others, and take
    an explicit --classes."""
    from camloc.cli import main

    root = tmp_path / "tiny"
    _tiny_layout(root, ["n07920052", "n03063599"])  # espresso (967), coffee mug (504)
    out = tmp_path / "ev"
    assert main(["evaluate", str(root), "--model", "lite0", "--out", str(out), "--quiet", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    recs = [json.loads(line) for line in (out / "per_image.jsonl").read_text().splitlines()]
    assert [r["true_class"] for r in recs] == [967, 504]
    assert doc["metrics"]["top1_cls"] == np.mean([r["top1_class"] == r["true_class"] for r in recs])
    cal = tmp_path / "calib.json"
    assert main(["calibrate", str(root), "--model", "lite0", "--out", str(cal), "--quiet", "--folds", "2"]) == 0
    from camloc.calibrate import sample_key

    keys = [sample_key(Sample(f"val_{i}", root / "val" / "images" / f"val_{i}.JPEG", c, np.zeros((1, 4))))
            for i, c in enumerate((967, 504))]  # fmt: skip
    assert sorted(json.loads(cal.read_text())["image_keys"]) == sorted(keys)  # keys hash file name and class
    # an explicit class order wins (here: the folder's own wnids.txt)
    assert main(["evaluate", str(root), "--model", "lite0", "--classes", str(root / "wnids.txt"),
                 "--out", str(tmp_path / "own"), "--quiet"]) == 0  # fmt: skip
    own = [json.loads(line) for line in (tmp_path / "own" / "per_image.jsonl").read_text().splitlines()]
    assert [r["true_class"] for r in own] == [0, 1]


def test_tiny_imagenet_folder_keeps_its_order_for_other_classifiers(tmp_path: Path):
    from camloc.cli_evaluate import is_imagenet_classifier, reader_classes

    root = tmp_path / "tiny"
    _tiny_layout(root, ["n07920052", "n03063599"])
    import argparse

    args = argparse.Namespace(data=root, format="auto", classes=None)
    assert reader_classes(args, INFO) == {} and not is_imagenet_classifier(INFO)  # a 2-class model: wnids.txt
    from camloc.models.registry import create_model

    _, info = create_model("lite0")
    assert reader_classes(args, info)["classes"][967] == "n07920052"
    csv = tmp_path / "l.csv"
    csv.write_text("file,class_idx,x0,y0,x1,y1\n")
    assert reader_classes(argparse.Namespace(data=csv, format="csv", classes=None), info) == {}  # not Tiny-ImageNet
