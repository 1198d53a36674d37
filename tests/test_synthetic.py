"""The synthetic weak-localization dataset: determinism, exact boxes/masks, balance, class-independent clutter."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camloc.data.synthetic import (
    CSV_HEADER,
    SYNTHETIC_CLASSES,
    make_synthetic_dataset,
    mask_box,
    render_synthetic_sample,
)
from camloc.errors import CamlocValueError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _open(path: Path) -> tuple[str, tuple[int, int], np.ndarray]:
    with Image.open(path) as im:
        return im.mode, im.size, np.asarray(im)


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("syn") / "a", num_classes=5, train_per_class=12, val_per_class=4, image_size=48, seed=7
    )


def test_same_seed_same_bytes_other_seed_other_images(dataset, tmp_path: Path) -> None:
    again = make_synthetic_dataset(
        tmp_path / "b", num_classes=5, train_per_class=12, val_per_class=4, image_size=48, seed=7
    )
    a, b = _files(dataset.root), _files(again.root)
    assert a.keys() == b.keys() and a == b
    assert not any(name.endswith(".tmp") for name in a)  # atomic writes leave no temporaries
    other = make_synthetic_dataset(
        tmp_path / "c", num_classes=5, train_per_class=12, val_per_class=4, image_size=48, seed=8
    )
    c = _files(other.root)
    assert a["train/images/000000.png"] != c["train/images/000000.png"]


def test_layout_header_and_paths(dataset) -> None:
    root = dataset.root
    assert dataset.train_csv == root / "train" / "labels.csv" and dataset.val_csv == root / "val" / "labels.csv"
    assert dataset.train_csv.read_text().splitlines()[0] == CSV_HEADER
    names = dataset.classes_txt.read_text().splitlines()
    assert tuple(names) == SYNTHETIC_CLASSES[:5] == dataset.classes
    assert (root / "train" / "classes.txt").read_text() == dataset.classes_txt.read_text()
    for split, n in (("train", 60), ("val", 20)):
        rows = _rows(root / split / "labels.csv")
        assert len(rows) == n
        for r in rows:
            mode, size, _ = _open(root / split / r["file"])
            assert mode == "RGB" and size == (48, 48) == (int(r["w"]), int(r["h"]))
            assert _open(root / split / r["mask"])[0] == "L"


def test_classes_are_balanced(dataset) -> None:
    for csv_path, per_class in ((dataset.train_csv, 12), (dataset.val_csv, 4)):
        counts = Counter(int(r["class_idx"]) for r in _rows(csv_path))
        assert counts == dict.fromkeys(range(5), per_class)
    assert (dataset.num_train, dataset.num_val) == (60, 20)


def test_boxes_tightly_enclose_the_mask_pixels(dataset) -> None:
    for csv_path in (dataset.train_csv, dataset.val_csv):
        for r in _rows(csv_path):
            mask = _open(csv_path.parent / r["mask"])[2]
            assert set(np.unique(mask).tolist()) == {0, 255}
            x0, y0, x1, y1 = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
            ys, xs = np.nonzero(mask)
            # continuous-pixel convention: columns c0..c1 -> [c0, c1 + 1)
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            inside = np.zeros_like(mask, dtype=bool)
            inside[y0:y1, x0:x1] = True
            assert not mask[~inside].any()  # nothing outside the box
            # every box edge touches the object
            assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()
            assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()


def test_mask_box_hand_cases() -> None:
    m = np.zeros((6, 7), np.uint8)
    assert mask_box(m) == (0, 0, 0, 0)
    m[2, 3] = 255
    assert mask_box(m) == (3, 2, 4, 3)
    m[4:6, 0:2] = 1
    assert mask_box(m) == (0, 2, 4, 6)


def test_background_does_not_depend_on_the_class() -> None:
    """Same (seed, split, index), different classes: identical pixels outside both objects."""
    samples = [render_synthetic_sample(c, index=5, seed=3) for c in range(len(SYNTHETIC_CLASSES))]
    assert len({s.mask.tobytes() for s in samples}) >= 6  # the uniform shapes differ
    for s in samples[1:]:
        outside = (samples[0].mask == 0) & (s.mask == 0)
        assert outside.sum() > 0.4 * outside.size
        assert np.array_equal(samples[0].image[outside], s.image[outside])
        assert not np.array_equal(samples[0].image, s.image)


def test_objects_differ_from_their_surroundings_and_scales_are_respected() -> None:
    for i in range(40):
        s = render_synthetic_sample(0, index=i, image_size=64, seed=1, min_scale=0.3, max_scale=0.5, shapes=("square",))
        x0, y0, x1, y1 = s.box
        for side in (x1 - x0, y1 - y0):  # side = scale * size * aspect**(+-1/2), aspect <= 1.25
            assert 0.3 * 64 / 1.25**0.5 - 1 <= side <= 0.5 * 64 * 1.25**0.5 + 1
        on = s.mask > 0
        assert np.abs(s.image[on].mean(0) - s.image[~on].mean(0)).max() > 20


def test_render_is_pure_and_sizes_follow_image_size() -> None:
    a = render_synthetic_sample(4, index=2, image_size=40, seed=11, split="val")
    b = render_synthetic_sample(4, index=2, image_size=40, seed=11, split="val")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.box == b.box
    assert a.image.shape == (40, 40, 3) and a.image.dtype == np.uint8 and a.mask.shape == (40, 40)
    c = render_synthetic_sample(4, index=2, image_size=40, seed=11, split="train")
    assert not np.array_equal(a.image, c.image)


def test_chosen_classes(tmp_path: Path) -> None:
    ds = make_synthetic_dataset(
        tmp_path, classes=("checker", "ring"), train_per_class=2, val_per_class=0, image_size=32
    )
    assert ds.classes == ("checker", "ring") and ds.num_val == 0
    assert len(_rows(ds.val_csv)) == 0 and len(_rows(ds.train_csv)) == 4


def test_bad_arguments() -> None:
    with pytest.raises(CamlocValueError, match="`num_classes` must be <= 10"):
        make_synthetic_dataset("unused", num_classes=11)
    with pytest.raises(CamlocValueError, match="`classes` must be at least 2 distinct names"):
        make_synthetic_dataset("unused", classes=("disc", "blob"))
    with pytest.raises(CamlocValueError, match=r"`max_scale` must be >= 0\.5"):
        render_synthetic_sample(0, min_scale=0.5, max_scale=0.4)
    with pytest.raises(CamlocValueError, match="`split`"):
        render_synthetic_sample(0, split="test")
