"""CAM boxes as detections (COCO results / instances, YOLO labels) and COCO instances as evaluation data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import camloc
from camloc.data.annotations import detect_format, read_coco, read_csv, read_dataset
from camloc.errors import AnnotationError, CamlocValueError
from camloc.explain import ClassBox, ImageResult
from camloc.export.detections import (
    as_record,
    coco_instances,
    coco_results,
    select_boxes,
    write_detections,
    write_yolo,
    yolo_lines,
)

ASSETS = Path(camloc.__file__).parent / "assets"
NAMES = ("cat", "dog", "bird")


def _result(path: str = "/data/a/x.jpg", size=(200, 100)) -> ImageResult:
    return ImageResult(
        Path(path),
        size,
        (
            ClassBox(1, 2, "bird", 0.7, (10.0, 20.0, 110.0, 70.0)),
            ClassBox(2, 0, "cat", 0.2, (-5.0, 0.0, 50.0, 120.0)),  # beyond the image: clipped for YOLO
            ClassBox(3, 1, "dog", 0.05, (0.0, 0.0, 0.0, 0.0)),  # no box
        ),
    )


# --------------------------------------------------------------------------------------------- pure functions


def test_records_from_results_and_from_jsonl_rows_agree() -> None:
    res = _result()
    assert as_record(res) == as_record(res.to_dict()) == as_record(json.loads(json.dumps(res.to_dict())))
    rec = as_record(res)
    assert rec.size == (200, 100) and [d.rank for d in rec.boxes] == [1, 2, 3]
    with pytest.raises(CamlocValueError, match=r"`results` must be explained images"):
        as_record({"path": "x.jpg", "error": "cannot decode"})
    with pytest.raises(CamlocValueError, match=r"`results` must be rows with path, width, height and topk"):
        as_record({"path": "x.jpg", "topk": []})
    with pytest.raises(CamlocValueError, match=r"`topk of x.jpg` must be a top-k entry"):
        as_record({"path": "x.jpg", "width": 2, "height": 2, "topk": [{"rank": 1}]})


def test_selection_by_rank_score_and_empty_boxes() -> None:
    rec = as_record(_result())
    assert [d.rank for d in select_boxes(rec)] == [1]  # default: the top-1 box
    assert [d.rank for d in select_boxes(rec, topk=3)] == [1, 2]  # rank 3 has no box
    assert [d.rank for d in select_boxes(rec, topk=None, min_score=0.5)] == [1]
    assert select_boxes(rec, topk=3, min_score=0.8) == []
    with pytest.raises(CamlocValueError, match=r"`min_score` must be <= 1"):
        select_boxes(rec, min_score=2.0)


def test_coco_results_hand_computed() -> None:
    got = coco_results([_result(), _result("/data/b/y.jpg")], NAMES, topk=2)
    assert got == [
        {"image_id": 1, "category_id": 3, "bbox": [10.0, 20.0, 100.0, 50.0], "score": 0.7},
        {"image_id": 1, "category_id": 1, "bbox": [-5.0, 0.0, 55.0, 120.0], "score": 0.2},
        {"image_id": 2, "category_id": 3, "bbox": [10.0, 20.0, 100.0, 50.0], "score": 0.7},
        {"image_id": 2, "category_id": 1, "bbox": [-5.0, 0.0, 55.0, 120.0], "score": 0.2},
    ]
    doc = coco_instances([_result(), _result("/data/b/y.jpg")], NAMES, topk=1)
    assert [i["file_name"] for i in doc["images"]] == ["a/x.jpg", "b/y.jpg"]  # relative to the common folder
    assert doc["categories"][2] == {"id": 3, "name": "bird", "supercategory": "", "camloc_class_idx": 2}
    assert doc["annotations"][0] == {
        "id": 1, "image_id": 1, "category_id": 3, "bbox": [10.0, 20.0, 100.0, 50.0], "score": 0.7,
        "area": 5000.0, "iscrowd": 0,
    }  # fmt: skip
    with pytest.raises(CamlocValueError, match=r"`categories` must be names for every class index"):
        coco_results([_result()], ("cat", "dog"))


def test_yolo_lines_hand_computed() -> None:
    # bird (10, 20, 110, 70) in 200x100: centre (60, 45), size 100x50 -> 0.3 0.45 0.5 0.5
    # cat (-5, 0, 50, 120) clipped to (0, 0, 50, 100): centre (25, 50), size 50x100 -> 0.125 0.5 0.25 1
    assert yolo_lines(_result(), topk=3) == [
        "2 0.300000 0.450000 0.500000 0.500000",
        "0 0.125000 0.500000 0.250000 1.000000",
    ]
    assert yolo_lines(_result(), min_score=0.9) == []


def test_write_yolo_stems_and_listing(tmp_path: Path) -> None:
    rows = [_result("/d/a/x.jpg").to_dict(), _result("/d/b/x.jpg").to_dict()]
    labels = write_yolo(tmp_path, rows, NAMES)
    assert sorted(p.name for p in labels.iterdir()) == ["a__x.txt", "b__x.txt"]
    assert (tmp_path / "classes.txt").read_text() == "cat\ndog\nbird\n"
    assert (tmp_path / "images.txt").read_text() == "/d/a/x.jpg\tlabels/a__x.txt\n/d/b/x.jpg\tlabels/b__x.txt\n"
    write_yolo(tmp_path / "s", rows, NAMES, stems=["one", "two"], min_score=0.9)
    assert (tmp_path / "s" / "labels" / "one.txt").read_text() == ""  # a background image: empty label file
    with pytest.raises(CamlocValueError, match=r"`stems` must be 2 distinct names"):
        write_yolo(tmp_path, rows, NAMES, stems=["a", "a"])
    with pytest.raises(CamlocValueError, match=r"`export` must be one of 'coco', 'yolo'"):
        write_detections(tmp_path, rows, NAMES, formats=["voc"])


# --------------------------------------------------------------------------------------------- explain --export


def test_explain_export_round_trips_through_pycocotools_yolo_and_evaluate(tmp_path: Path, capsys) -> None:
    """explain --export coco yolo: pycocotools loads both files and its boxes equal results.jsonl; the YOLO
    labels parse back to the same boxes within 1e-6 of the image size (6 decimals); and the pseudo-labels, read
    as ground truth by ``camloc evaluate``, are found again by the model that made them."""
    coco_api = pytest.importorskip("pycocotools.coco")
    from camloc.cli import main

    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for name in ("cat.jpg", "coffee.jpg"):
        (photos / name).write_bytes((ASSETS / name).read_bytes())
    Image.open(ASSETS / "cat.jpg").resize((150, 90)).save(photos / "sub" / "cat.png")
    out = tmp_path / "out"
    argv = ["explain", str(photos), "--out", str(out), "--quiet", "--no-images", "--workers", "0", "--topk", "3",
            "--export", "coco", "--export", "yolo", "--export-topk", "2"]  # fmt: skip
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["export"]["formats"] == ["coco", "yolo"] and manifest["export"]["topk"] == 2
    gt = coco_api.COCO(str(out / "instances.json"))
    dt = gt.loadRes(str(out / "detections.json"))
    assert sorted(gt.getImgIds()) == [1, 2, 3] and len(gt.getCatIds()) == 1000
    for image_id, row in enumerate(rows, start=1):
        img = gt.loadImgs(image_id)[0]
        assert Path(img["path"]) == Path(row["path"]) and (img["width"], img["height"]) == (row["width"], row["height"])
        want = [t for t in row["topk"][:2] if t["box"][2] > t["box"][0] and t["box"][3] > t["box"][1]]
        for api in (gt, dt):
            anns = api.loadAnns(api.getAnnIds(imgIds=[image_id]))
            assert [a["category_id"] - 1 for a in anns] == [t["class_idx"] for t in want]
            assert [a["score"] for a in anns] == [t["prob"] for t in want]
            for a, t in zip(anns, want):
                x, y, w, h = a["bbox"]
                assert np.allclose([x, y, x + w, y + h], t["box"], atol=1e-9)
                assert api.loadCats(a["category_id"])[0]["name"] == t["name"]
        label = (
            out
            / "labels"
            / f"{Path(row['path']).relative_to(photos).with_suffix('').as_posix().replace('/', '__')}.txt"
        )
        lines = [line.split() for line in label.read_text().splitlines()]
        assert [int(p[0]) for p in lines] == [t["class_idx"] for t in want]
        for p, t in zip(lines, want):
            cx, cy, w, h = (float(v) for v in p[1:])
            W, H = row["width"], row["height"]
            back = [(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H]
            clipped = np.clip(t["box"], 0, [W, H, W, H])
            assert np.abs(np.array(back) - clipped).max() <= 1e-6 * max(W, H)
    # the pseudo-labels as ground truth: same model, same images -> its top-1 box is found again
    capsys.readouterr()
    assert main(["evaluate", str(out / "instances.json"), "--out", str(tmp_path / "ev"), "--quiet", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "coco" and doc["images"] == 3
    assert doc["metrics"]["top1_cls"] == 1.0 and doc["metrics"]["gt_known_loc"] == 1.0


# --------------------------------------------------------------------------------------------- COCO annotations


def _img(path: Path, size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[8:40, 8:40] = 255
    Image.fromarray(a).save(path)
    return path


def _coco_doc() -> dict:
    return {
        "images": [
            {"id": 10, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 11, "file_name": "b.png", "width": 64, "height": 48},
            {"id": 12, "file_name": "c.png"},
            {"id": 13, "file_name": "empty.png"},  # no annotation: no label, left out
        ],
        "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}, {"id": 11, "name": "bird"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 9, "bbox": [8, 8, 32, 32], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 9, "bbox": [40.5, 30, 10, 8.25]},  # a second dog
            {"id": 3, "image_id": 10, "category_id": 7, "bbox": [0, 0, 5, 5]},  # another class: not the image's
            {"id": 4, "image_id": 11, "category_id": 11, "bbox": [0, 0, 64, 48], "iscrowd": 1},  # crowd: ignored
            {"id": 5, "image_id": 11, "category_id": 7, "bbox": [4, 4, 20, 20]},
            {"id": 6, "image_id": 12, "category_id": 11, "bbox": [10, 12, 30, 20]},
        ],
    }


def _coco(tmp: Path, doc: dict | None = None, name: str = "instances.json") -> Path:
    for f in ("a.png", "b.png", "c.png", "empty.png"):
        _img(tmp / f)
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc or _coco_doc()))
    return p


def test_read_coco_classes_boxes_crowds_and_several_objects(tmp_path: Path) -> None:
    ds = read_coco(_coco(tmp_path))
    assert ds.format == "coco" and ds.class_names == ("cat", "dog", "bird")  # categories sorted by id
    assert [(s.image_id, s.class_idx) for s in ds] == [("a.png", 1), ("b.png", 0), ("c.png", 2)]
    a, b, c = ds.samples
    assert a.boxes.tolist() == [[8, 8, 40, 40], [40.5, 30, 50.5, 38.25]] and a.size == (64, 48)
    assert b.boxes.tolist() == [[4, 4, 24, 24]]  # the crowd box of another class is ignored
    assert c.boxes.tolist() == [[10, 12, 40, 32]] and c.size is None
    assert a.path == tmp_path / "a.png"
    # the model's class names decide the indices (case-insensitive); an explicit map wins and may drop classes
    by_name = read_coco(tmp_path / "instances.json", classes=("Bird", "x", "DOG", "cat"))
    assert [s.class_idx for s in by_name] == [2, 3, 0] and by_name.class_names == ("Bird", "x", "DOG", "cat")
    mapped = read_coco(tmp_path / "instances.json", class_map={"9": 4, "bird": 1})
    assert [(s.image_id, s.class_idx) for s in mapped] == [("a.png", 4), ("c.png", 1)]  # b.png: only a cat
    (tmp_path / "map.json").write_text(json.dumps({"7": 0, "9": 1, "11": 2}))
    assert read_dataset(tmp_path / "instances.json", class_map=tmp_path / "map.json").samples == ds.samples


def test_read_coco_errors(tmp_path: Path) -> None:
    p = _coco(tmp_path)
    with pytest.raises(AnnotationError, match=r"categories not among the model's 2 class names: 'bird'.*class_map"):
        read_coco(p, classes=("cat", "dog"))
    with pytest.raises(AnnotationError, match=r"names the model has twice: 'dog'"):
        read_coco(p, classes=("cat", "dog", "dog", "bird"))
    bad = _coco_doc()
    bad["annotations"][0]["bbox"] = [1, 2, -3, 4]
    with pytest.raises(AnnotationError, match=r"annotations\[0\]: bbox width and height must be >= 0"):
        read_coco(_coco(tmp_path, bad))
    bad = _coco_doc()
    bad["annotations"][1]["image_id"] = 99
    with pytest.raises(AnnotationError, match=r"annotations\[1\]: unknown image_id 99"):
        read_coco(_coco(tmp_path, bad))
    bad = _coco_doc()
    del bad["categories"]
    with pytest.raises(AnnotationError, match=r"expected a list 'categories'"):
        read_coco(_coco(tmp_path, bad))
    (tmp_path / "broken.json").write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(AnnotationError, match=r"broken.json:2: malformed JSON"):
        read_coco(tmp_path / "broken.json")
    p = _coco(tmp_path)
    (tmp_path / "a.png").unlink()
    with pytest.raises(AnnotationError, match=r"references a missing image file: .*a.png .*pass `images=`"):
        read_coco(p)
    assert len(read_coco(p, check_files=False)) == 3


def test_coco_layout_detection_and_image_folder(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    _coco(root / "val2017").unlink()  # the images only
    p = root / "annotations" / "instances_val2017.json"
    p.parent.mkdir()
    p.write_text(json.dumps(_coco_doc()))
    assert detect_format(root) == "coco" and detect_format(root / "annotations" / "instances_val2017.json") == "coco"
    ds = read_dataset(root)
    assert ds.samples[0].path == root / "val2017" / "a.png"  # annotations/instances_<split>.json -> <split>/
    assert read_dataset(root, split="val2017").samples == ds.samples
    with pytest.raises(AnnotationError, match=r"no COCO instances file \(expected annotations/instances_train.json\)"):
        read_dataset(root, format="coco", split="train")
    other = tmp_path / "elsewhere"
    for f in ("a.png", "b.png", "c.png"):
        _img(other / f)
    assert read_coco(p, images=other).samples[0].path == other / "a.png"


def test_coco_ground_truth_evaluates_like_the_same_data_in_csv(tmp_path: Path, capsys) -> None:
    import timm
    import torch

    from camloc.cli import main

    p = _coco(tmp_path)
    ds = read_coco(p, class_map={"7": 0, "9": 1, "11": 2})
    rows = ["file,class_idx,x0,y0,x1,y1"]
    rows += [f"{s.image_id},{s.class_idx}," + ",".join(f"{v:g}" for v in box) for s in ds for box in s.boxes]
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    as_csv = read_csv(tmp_path / "boxes.csv")
    assert [(s.path, s.class_idx, s.boxes.tolist()) for s in as_csv] == [
        (s.path, s.class_idx, s.boxes.tolist()) for s in ds
    ]
    (tmp_path / "map.json").write_text(json.dumps({"cat": 0, "dog": 1, "bird": 2}))
    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=3).state_dict(), tmp_path / "w.pth")
    docs = []
    for data, extra in ((tmp_path / "boxes.csv", []), (p, ["--class-map", str(tmp_path / "map.json")])):
        argv = ["evaluate", str(data), "--model", "timm:resnet18", "--weights", str(tmp_path / "w.pth"), "--quiet",
                "--json", "--workers", "0", "--out", str(tmp_path / f"ev_{data.suffix[1:]}"), *extra]  # fmt: skip
        assert main(argv) == 0
        docs.append(json.loads(capsys.readouterr().out))
    csv_doc, coco_doc = docs
    assert (csv_doc["format"], coco_doc["format"]) == ("csv", "coco") and coco_doc["images"] == 3
    assert coco_doc["metrics"] == csv_doc["metrics"] and coco_doc["curve"] == csv_doc["curve"]
    # without --class-map the categories must be the model's class names (class_0, class_1, class_2 here)
    assert main(["evaluate", str(p), "--model", "timm:resnet18", "--weights", str(tmp_path / "w.pth"), "--quiet",
                 "--out", str(tmp_path / "ev_x")]) == 2  # fmt: skip
    assert "categories not among the model's 3 class names" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "boxes.csv"), "--class-map", str(tmp_path / "map.json")]) == 2
    assert "`--class-map` must be used with COCO annotations" in capsys.readouterr().err
