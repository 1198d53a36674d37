"""``camloc synthetic --kind text``: words on photos with exact ink boxes, balanced labels, determinism, errors."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camloc.cli import main
from camloc.data.synthetic import mask_box
from camloc.data.synthetic_text import (
    DEFAULT_FONT,
    TEXT_CLASSES,
    find_fonts,
    make_text_dataset,
    render_text,
    text_background,
)
from camloc.errors import CamlocValueError

SIZE = 96


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five 'photos' (smooth gradients with noise, different sizes and formats)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(160, 120), (120, 160), (200, 150), (140, 140), (180, 130)]):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / w, yy * 255 / h, np.full((h, w), 40 * i)], -1)
        img = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / (f"p{i}.png" if i % 2 else f"p{i}.jpg"))
    return root


@pytest.fixture(scope="module")
def text_set(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("text") / "set"
    make_text_dataset(out, photos, train_per_class=6, val_per_class=3, image_size=SIZE, fonts=[DEFAULT_FONT])
    return out


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_boxes_hold_the_ink_exactly(text_set: Path, photos: Path) -> None:
    files = sorted(p for p in photos.iterdir())
    n = {"train": 12, "val": 6}
    for split in ("train", "val"):
        rows = _rows(text_set / split / "labels.csv")
        by_file: dict[str, list[dict[str, str]]] = {}
        for r in rows:
            by_file.setdefault(r["file"], []).append(r)
        assert len(by_file) == n[split]
        for i in range(n[split]):
            f = f"images/{i:06d}.png"
            img = np.asarray(Image.open(text_set / split / f).convert("RGB"))
            bg = text_background(files, index=i, split=split, image_size=SIZE, num_train=12, num_val=6)
            changed = (img != bg).any(-1)
            if i % 2 == 0:  # "no text": the photo crop itself, one row with no box
                assert by_file[f] == [dict(by_file[f][0], class_idx="0", x0="", y0="", x1="", y1="", mask="")]
                assert not changed.any()
                continue
            boxes = [tuple(int(r[k]) for k in ("x0", "y0", "x1", "y1")) for r in by_file[f]]
            assert all(r["class_idx"] == "1" for r in by_file[f]) and 1 <= len(boxes) <= 2
            mask = np.asarray(Image.open(text_set / split / by_file[f][0]["mask"])) > 0
            inside = np.zeros_like(mask)
            for x0, y0, x1, y1 in boxes:
                assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
                region = np.zeros_like(mask)
                region[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
                assert mask_box(region) == (x0, y0, x1, y1)  # the tight box of the ink inside it
                assert not (inside & region).any()  # words do not overlap
                inside[y0:y1, x0:x1] = True
            assert not (mask & ~inside).any()  # all ink is in some box
            assert not (changed & ~mask).any()  # pixels differ from the photo only on the ink ...
            assert changed.sum() >= 0.5 * mask.sum()  # ... and the ink is visible (contrasting colour)


def test_labels_balanced_and_text_csv(text_set: Path) -> None:
    assert (text_set / "classes.txt").read_text().splitlines() == list(TEXT_CLASSES)
    for split, per_class in (("train", 6), ("val", 3)):
        rows = _rows(text_set / split / "labels.csv")
        labels = {r["file"]: r["class_idx"] for r in rows}
        assert Counter(labels.values()) == {"0": per_class, "1": per_class}
        text_rows = _rows(text_set / split / "text.csv")
        assert text_rows == [r for r in rows if r["class_idx"] == "1"]
    meta = json.loads((text_set / "text_set.json").read_text())
    assert meta["fonts"] == [DEFAULT_FONT] and len(meta["photos"]) == 5


def test_deterministic_by_seed(text_set: Path, photos: Path, tmp_path: Path) -> None:
    kw = {"train_per_class": 6, "val_per_class": 3, "image_size": SIZE, "fonts": [DEFAULT_FONT]}
    again = make_text_dataset(tmp_path / "again", photos, **kw).root
    other = make_text_dataset(tmp_path / "other", photos, seed=1, **kw).root
    names = sorted(p.relative_to(text_set) for p in text_set.rglob("*") if p.is_file() and p.name != "text_set.json")
    assert names == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file() and p.name != "text_set.json")
    assert all((text_set / n).read_bytes() == (again / n).read_bytes() for n in names)
    assert (text_set / "train/labels.csv").read_bytes() != (other / "train/labels.csv").read_bytes()


def test_render_is_pure_and_varies() -> None:
    bg = np.full((SIZE, SIZE, 3), 128, np.uint8)
    a = render_text(bg, seed=3, index=5, fonts=[DEFAULT_FONT], max_angle=45)
    b = render_text(bg, seed=3, index=5, fonts=[DEFAULT_FONT], max_angle=45)
    assert np.array_equal(a.image, b.image) and a.boxes == b.boxes and a.words == b.words
    many = [render_text(bg, index=i, fonts=[DEFAULT_FONT]) for i in range(12)]
    assert len({s.words for s in many}) > 6 and len({s.boxes for s in many}) == 12
    heights = [y1 - y0 for s in many for (_, y0, _, y1) in s.boxes]
    assert min(heights) < max(heights) / 1.5  # sizes (and angles) vary
    # the background is untouched off the ink; the input array is not modified
    assert not ((a.image != bg).any(-1) & (a.mask == 0)).any() and (bg == 128).all()


def test_fonts_found_at_run_time(tmp_path: Path) -> None:
    (tmp_path / "broken.ttf").write_bytes(b"not a font")
    assert find_fonts([tmp_path, tmp_path / "missing"]) == (DEFAULT_FONT,)  # unreadable and missing: skipped
    found = find_fonts()
    assert found[0] == DEFAULT_FONT and all(
        f == DEFAULT_FONT or Path(f).suffix.lower() in (".ttf", ".otf") for f in found
    )


def test_bad_arguments(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(CamlocValueError, match="`photos` must be"):
        make_text_dataset(tmp_path / "o", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CamlocValueError, match="`photos` must be"):
        make_text_dataset(tmp_path / "o", tmp_path / "empty")
    with pytest.raises(CamlocValueError, match="`fonts` must be"):
        make_text_dataset(tmp_path / "o", photos, fonts=[])
    with pytest.raises(CamlocValueError, match="`max_text_height` must be"):
        make_text_dataset(tmp_path / "o", photos, min_text_height=0.3, max_text_height=0.1)
    with pytest.raises(CamlocValueError, match="`background` must be"):
        render_text(np.zeros((10, 12, 3), np.uint8))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(CamlocValueError, match="`photos` must be readable"):
        make_text_dataset(tmp_path / "o", tmp_path / "bad", train_per_class=1, val_per_class=0, fonts=[DEFAULT_FONT])
    assert main(["synthetic", str(tmp_path / "c"), "--kind", "text"]) == 2  # no --photos
    assert main(["synthetic", str(tmp_path / "c"), "--photos", str(photos)]) == 2  # --photos with shapes
    assert main(["synthetic", str(tmp_path / "c"), "--kind", "words"]) == 2


def test_cli_generate_fit_evaluate(photos: Path, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    import torch

    import camloc

    data = tmp_path / "text"
    argv = ["synthetic", str(data), "--kind", "text", "--photos", str(photos), "--image-size", "64"]
    assert main([*argv, "--train-per-class", "8", "--val-per-class", "4", "--fonts", str(tmp_path)]) == 0
    assert json.loads((data / "text_set.json").read_text())["fonts"] == [DEFAULT_FONT]
    torch.manual_seed(0)
    model, _ = camloc.create_model("tiny_gap")
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    run = tmp_path / "run"
    fit = ["fit", str(data), "--model", "tiny_gap", "--weights", str(tmp_path / "tiny.pt"), "--out", str(run)]
    assert main([*fit, "--quiet", "--workers", "0", "--C", "1"]) == 0
    rep = json.loads((run / "fit_report.json").read_text())
    assert rep["classes"] == ["no text", "text"] and rep["binary_positive_class"] == "text"
    assert rep["train_images"] == 16 and rep["test"]["images"] == 8
    ev = tmp_path / "ev"
    argv = ["evaluate", str(data / "val" / "text.csv"), "--checkpoint", str(run / "model.pt"), "--out", str(ev)]
    assert main([*argv, "--quiet", "--workers", "0"]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert m["images"] == 4 and m["images_with_masks"] == 4 and "gt_known_loc" in m["metrics"]
