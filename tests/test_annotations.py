"""Annotation readers: tiny fake datasets of every format, exact records, auto detection and every error path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camloc.data import (
    AnnotationSet,
    Sample,
    detect_format,
    read_class_list,
    read_csv,
    read_cub,
    read_dataset,
    read_ilsvrc_csv,
    read_ilsvrc_xml,
    read_tiny_imagenet,
    read_voc,
    read_wsol,
)
from camloc.errors import AnnotationError, CamlocTypeError, CamlocValueError

# ------------------------------------------------------------------------------------------- helpers

WNIDS = ["n01440764", "n01443537", "n01484850"]
SYNSET_WORDS = "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\nn01484850 great white shark\n"


def _img(path: Path, size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _xml(filename: str, objects: list[tuple[str, tuple]], size: tuple[int, int] | None = (500, 375)) -> str:
    """A VOC/ILSVRC XML document; each object is (name, (xmin, ymin, xmax, ymax)) or (name, box, difficult)."""
    parts = ["<annotation>", "\t<folder>val</folder>", f"\t<filename>{filename}</filename>"]
    if size is not None:
        parts += ["\t<size>", f"\t\t<width>{size[0]}</width>", f"\t\t<height>{size[1]}</height>", "\t</size>"]
    for obj in objects:
        name, box = obj[0], obj[1]
        difficult = obj[2] if len(obj) > 2 else 0
        parts += [
            "\t<object>",
            f"\t\t<name>{name}</name>",
            f"\t\t<difficult>{difficult}</difficult>",
            "\t\t<bndbox>",
            *(f"\t\t\t<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box)),
            "\t\t</bndbox>",
            "\t</object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def _boxes(*rows: tuple) -> np.ndarray:
    return np.asarray(rows, np.float32).reshape(-1, 4)


def _expect_error(match: str, path: Path, line: int | None):
    """Context manager asserting an AnnotationError naming ``path`` and ``line`` with ``match`` in it."""

    class _Ctx:
        def __enter__(self):
            self.cm = pytest.raises(AnnotationError, match=match)
            self.info = self.cm.__enter__()
            return self.info

        def __exit__(self, *exc):
            out = self.cm.__exit__(*exc)
            err = self.info.value
            assert Path(err.path) == path
            assert err.line == line
            where = f"{path}:{line}" if line is not None else f"{path}"
            assert str(err).startswith(where + ": ")
            return out

    return _Ctx()


# ------------------------------------------------------------------------------------------- records


def test_sample_normalises_and_freezes() -> None:
    s = Sample("a", "x/a.jpg", np.int64(2), [[1, 2, 3, 4]], size=(8, 6), mask_paths=["m.png"])
    assert s.path == Path("x/a.jpg") and s.class_idx == 2 and type(s.class_idx) is int
    assert s.boxes.dtype == np.float32 and s.boxes.shape == (1, 4) and s.num_boxes == 1
    assert s.mask_paths == (Path("m.png"),)
    with pytest.raises(ValueError):
        s.boxes[0, 0] = 5  # read-only
    empty = Sample("b", "b.jpg", 0, [])
    assert empty.boxes.shape == (0, 4)
    assert s == Sample("a", Path("x/a.jpg"), 2, np.array([[1, 2, 3, 4]], np.float64), (8, 6), ("m.png",))
    assert s != Sample("a", Path("x/a.jpg"), 2, [[1, 2, 3, 5]], (8, 6), ("m.png",))
    assert hash(s) == hash(Sample("a", "x/a.jpg", 2, [[1, 2, 3, 4]]))


def test_sample_rejects_bad_values() -> None:
    with pytest.raises(CamlocValueError, match="`boxes` must be an array of shape"):
        Sample("a", "a", 0, [[1, 2, 3]])
    with pytest.raises(CamlocValueError, match="`class_idx` must be >= 0"):
        Sample("a", "a", -1, [])
    with pytest.raises(CamlocTypeError, match="`class_idx` must be an integer"):
        Sample("a", "a", 1.0, [])
    with pytest.raises(CamlocValueError, match="`size` must be"):
        Sample("a", "a", 0, [], size=(0, 5))


def test_annotation_set_container() -> None:
    s1, s2 = Sample("a", "a", 0, [[0, 0, 1, 1]]), Sample("b", "b", 1, [[0, 0, 1, 1], [1, 1, 2, 2]])
    ds = AnnotationSet((s1, s2), ("x", "y"), "csv", Path("."))
    assert len(ds) == 2 and ds[1] is s2 and list(ds) == [s1, s2]
    assert ds.num_boxes == 3 and ds.num_classes == 2
    assert AnnotationSet((), None, "csv", Path(".")).num_classes is None


def test_read_class_list_formats(tmp_path: Path) -> None:
    cl = read_class_list(_write(tmp_path / "synset_words.txt", SYNSET_WORDS + "\n"))
    assert cl.keys == tuple(WNIDS) and cl.has_wnids
    assert cl.names == ("tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark")
    cl = read_class_list(_write(tmp_path / "wnids.txt", "n01440764\r\nn01443537\r\n"))
    assert cl.keys == cl.names == ("n01440764", "n01443537")
    cl = read_class_list(_write(tmp_path / "classes.txt", "great white shark\ncat\n"))
    assert cl.keys == ("great white shark", "cat") and not cl.has_wnids
    cl = read_class_list(_write(tmp_path / "tab.txt", "n01440764\ttench\n"))
    assert cl.keys == ("n01440764",) and cl.names == ("tench",)


def test_read_class_list_errors(tmp_path: Path) -> None:
    p = _write(tmp_path / "dup.txt", "n01440764 a\n\nn01440764 b\n")
    with _expect_error("duplicate class 'n01440764' \\(first at line 1\\)", p, 3):
        read_class_list(p)
    p = _write(tmp_path / "empty.txt", "\n\n")
    with _expect_error("no classes", p, None):
        read_class_list(p)
    with _expect_error("file not found", tmp_path / "nope.txt", None):
        read_class_list(tmp_path / "nope.txt")


# ---------------------------------------------------------------------------------------- ILSVRC XML


def _ilsvrc_xml_dataset(xml_dir: Path, img_dir: Path) -> None:
    _write(
        xml_dir / "ILSVRC2012_val_00000001.xml",
        _xml(
            "ILSVRC2012_val_00000001",
            [
                ("n01443537", (10, 20, 30, 40)),
                ("n01443537", (0, 0, 499, 374)),
            ],
        ),
    )
    _write(
        xml_dir / "ILSVRC2012_val_00000002.xml",
        _xml(
            "ILSVRC2012_val_00000002",
            [
                ("n01484850", (5, 6, 7, 8)),
                ("n01440764", (1, 1, 2, 2)),
                ("n01484850", (50.5, 60, 70, 80)),
            ],
            size=None,
        ),
    )
    _img(img_dir / "ILSVRC2012_val_00000001.JPEG")
    _img(img_dir / "ILSVRC2012_val_00000002.JPEG")


def _check_ilsvrc_xml(ds: AnnotationSet, img_dir: Path) -> None:
    assert ds.format == "ilsvrc_xml" and len(ds) == 2 and ds.num_boxes == 4
    assert ds.wnids == tuple(WNIDS) and ds.class_names is not None and ds.class_names[0] == "tench, Tinca tinca"
    a, b = ds
    assert a == Sample(
        "ILSVRC2012_val_00000001",
        img_dir / "ILSVRC2012_val_00000001.JPEG",
        1,
        _boxes((10, 20, 30, 40), (0, 0, 499, 374)),  # corners as-is
        (500, 375),
    )
    # class of the FIRST object; only the boxes of that class
    assert b == Sample(
        "ILSVRC2012_val_00000002", img_dir / "ILSVRC2012_val_00000002.JPEG", 2, _boxes((5, 6, 7, 8), (50.5, 60, 70, 80))
    )


def test_ilsvrc_xml_side_by_side(tmp_path: Path) -> None:
    _ilsvrc_xml_dataset(tmp_path, tmp_path)
    _write(tmp_path / "synset_words.txt", SYNSET_WORDS)
    _check_ilsvrc_xml(read_ilsvrc_xml(tmp_path), tmp_path)
    assert detect_format(tmp_path) == "ilsvrc_xml"
    _check_ilsvrc_xml(read_dataset(tmp_path), tmp_path)


@pytest.mark.parametrize("xml_sub", ["bbox", "Annotations"])
def test_ilsvrc_xml_val_plus_bbox_layout(tmp_path: Path, xml_sub: str) -> None:
    _ilsvrc_xml_dataset(tmp_path / xml_sub, tmp_path / "val")
    _write(tmp_path / "LOC_synset_mapping.txt", SYNSET_WORDS)
    if xml_sub == "Annotations":  # VOC-looking layout: the wnid object names decide
        (tmp_path / "JPEGImages").mkdir()
    assert detect_format(tmp_path) == "ilsvrc_xml"
    _check_ilsvrc_xml(read_dataset(tmp_path), tmp_path / "val")
    # the XML folder itself, images found in the sibling val/
    _check_ilsvrc_xml(read_ilsvrc_xml(tmp_path / xml_sub), tmp_path / "val")


def test_ilsvrc_xml_kaggle_layout_and_explicit_options(tmp_path: Path) -> None:
    xml_dir = tmp_path / "ILSVRC" / "Annotations" / "CLS-LOC" / "val"
    img_dir = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    _ilsvrc_xml_dataset(xml_dir, img_dir)
    _write(tmp_path / "LOC_synset_mapping.txt", SYNSET_WORDS)
    _check_ilsvrc_xml(read_ilsvrc_xml(tmp_path), img_dir)
    ds = read_ilsvrc_xml(xml_dir, image_dir=img_dir, classes=WNIDS[::-1])
    assert [s.class_idx for s in ds] == [1, 0] and ds.class_names == tuple(WNIDS[::-1])
    with pytest.raises(CamlocTypeError, match="`classes` must be"):
        read_ilsvrc_xml(xml_dir, classes=3)
    with pytest.raises(CamlocValueError, match="`classes` must not repeat"):
        read_ilsvrc_xml(xml_dir, classes=["n01440764", "n01440764"])


def test_ilsvrc_xml_check_files_off(tmp_path: Path) -> None:
    _write(tmp_path / "a.xml", _xml("ILSVRC2012_val_00000009", [("n01440764", (1, 2, 3, 4))]))
    ds = read_ilsvrc_xml(tmp_path, classes=WNIDS, check_files=False)
    assert ds[0].path == tmp_path / "a.JPEG" and ds[0].image_id == "a"
    with _expect_error("references a missing image file", tmp_path / "a.xml", None):
        read_ilsvrc_xml(tmp_path, classes=WNIDS, image_dir=tmp_path)


def test_ilsvrc_xml_errors(tmp_path: Path) -> None:
    _write(tmp_path / "synset_words.txt", SYNSET_WORDS)
    _img(tmp_path / "x.JPEG")
    xml = tmp_path / "x.xml"
    _write(xml, _xml("x", [("n01440764", (1, 2, 3, 4)), ("n09999999", (1, 2, 3, 4))]))
    with _expect_error("unknown wnid 'n09999999' \\(not in labels file", xml, 19):
        read_ilsvrc_xml(tmp_path)
    _write(xml, _xml("x", [("n01440764", (5, 2, 3, 4))]))
    with _expect_error(r"box \(5, 2, 3, 4\) has x1 < x0", xml, 11):
        read_ilsvrc_xml(tmp_path)
    _write(xml, _xml("x", [("n01440764", (1, "abc", 3, 4))]))
    with _expect_error("<ymin> must be a number; got 'abc'", xml, 13):
        read_ilsvrc_xml(tmp_path)
    _write(xml, "<annotation>\n<object>\n</annotation>\n")
    with _expect_error("malformed XML", xml, 3):
        read_ilsvrc_xml(tmp_path)
    _write(xml, _xml("x", []))
    with _expect_error("no <object>", xml, None):
        read_ilsvrc_xml(tmp_path)
    _write(xml, "<annotation>\n<object><name>n01440764</name></object>\n</annotation>\n")
    with _expect_error("without a <bndbox>", xml, 2):
        read_ilsvrc_xml(tmp_path)
    _write(xml, _xml("x", [("n01440764", (1, 2, 3, 4))]))
    (tmp_path / "synset_words.txt").unlink()
    with _expect_error("no labels file giving the class order", tmp_path, None):
        read_ilsvrc_xml(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with _expect_error("no ILSVRC XML annotation files", empty, None):
        read_ilsvrc_xml(empty)


# ---------------------------------------------------------------------------------------- ILSVRC CSV


def test_ilsvrc_kaggle_csv(tmp_path: Path) -> None:
    _write(tmp_path / "LOC_synset_mapping.txt", SYNSET_WORDS)
    _write(
        tmp_path / "LOC_val_solution.csv",
        "ImageId,PredictionString\r\n"
        "ILSVRC2012_val_00000002,n01484850 5 6 7 8 n01440764 1 1 2 2 n01484850 50 60 70 80 \r\n"
        "ILSVRC2012_val_00000001,n01443537 10 20 30 40\r\n",
    )
    img = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    _img(img / "ILSVRC2012_val_00000001.JPEG")
    _img(img / "ILSVRC2012_val_00000002.JPEG")
    for ds in (read_dataset(tmp_path), read_dataset(tmp_path / "LOC_val_solution.csv"), read_ilsvrc_csv(tmp_path)):
        assert ds.format == "ilsvrc_csv" and ds.wnids == tuple(WNIDS)
        v1, v2 = (img / f"ILSVRC2012_val_0000000{i}.JPEG" for i in (1, 2))
        assert list(ds) == [
            Sample("ILSVRC2012_val_00000002", v2, 2, _boxes((5, 6, 7, 8), (50, 60, 70, 80))),
            Sample("ILSVRC2012_val_00000001", v1, 1, _boxes((10, 20, 30, 40))),
        ]


def test_ilsvrc_kaggle_csv_train_layout(tmp_path: Path) -> None:
    _write(tmp_path / "LOC_synset_mapping.txt", SYNSET_WORDS)
    _write(tmp_path / "LOC_train_solution.csv", "ImageId,PredictionString\nn01443537_7,n01443537 1 2 3 4\n")
    img = _img(tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "train" / "n01443537" / "n01443537_7.JPEG")
    ds = read_dataset(tmp_path, split="train")
    assert ds.format == "ilsvrc_csv" and ds[0].path == img and ds[0].class_idx == 1


def test_ilsvrc_kaggle_csv_errors(tmp_path: Path) -> None:
    _write(tmp_path / "LOC_synset_mapping.txt", SYNSET_WORDS)
    _img(tmp_path / "val" / "a.JPEG")
    csv = tmp_path / "LOC_val_solution.csv"
    head = "ImageId,PredictionString\n"
    cases = [
        (head + "a,n01440764 1 2 3\n", "groups of 5 tokens", 2),
        (head + "a,n01440764 1 2 3 4 n09999999 1 2 3 4\n", "unknown wnid 'n09999999'", 2),
        (head + "a,n01440764 1 x 3 4\n", "y0 of n01440764 must be a number; got 'x'", 2),
        (head + "a,n01440764 1 2 0 4\n", "has x1 < x0", 2),
        (head + "a,n01440764 1 2 3 4,extra\n", "expected 2 columns", 2),
        (head + "a,n01440764 1 2 3 4\n\na,n01440764 1 2 3 4\n", "duplicate ImageId 'a' \\(first at line 2\\)", 4),
        (head + "b,n01440764 1 2 3 4\n", "references a missing image file", 2),
        ("ImageId,Foo\n", "expected the header", 1),
        ("", "expected the header", None),
    ]
    for text, match, line in cases:
        _write(csv, text)
        with _expect_error(match, csv, line):
            read_ilsvrc_csv(tmp_path)
    with _expect_error("expected the Kaggle ILSVRC LOC_train_solution.csv", tmp_path / "LOC_train_solution.csv", None):
        read_ilsvrc_csv(tmp_path, split="train")
    with pytest.raises(CamlocValueError, match="`split` must be one of 'val', 'train'; got 'test'"):
        read_ilsvrc_csv(tmp_path, split="test")


# ------------------------------------------------------------------------------------------------ VOC


def _voc(root: Path) -> None:
    ann = root / "Annotations"
    _write(
        ann / "2007_000001.xml",
        _xml("2007_000001.jpg", [("dog", (1, 1, 10, 20)), ("cat", (3, 4, 5, 6)), ("dog", (5, 5, 5, 5), 1)]),
    )
    _write(ann / "2007_000002.xml", _xml("2007_000002.jpg", [("person", (0, 2, 8, 6), 1), ("cat", (2, 3, 4, 5))]))
    _write(ann / "2007_000003.xml", _xml("2007_000003.jpg", [("bird", (11, 21, 30, 40), 1)]))
    for i in (1, 2, 3):
        _img(root / "JPEGImages" / f"2007_00000{i}.jpg")
    _write(root / "ImageSets" / "Main" / "val.txt", "2007_000002\n2007_000001\n")


def test_voc_reader(tmp_path: Path) -> None:
    _voc(tmp_path)
    ds = read_voc(tmp_path)
    assert detect_format(tmp_path) == "voc" and read_dataset(tmp_path) == ds
    assert ds.format == "voc" and ds.class_names == ("bird", "cat", "dog", "person") and ds.wnids is None
    img = tmp_path / "JPEGImages"
    # 1-based inclusive -> (xmin - 1, ymin - 1, xmax, ymax), x0/y0 clipped at 0
    assert list(ds) == [
        Sample("2007_000001", img / "2007_000001.jpg", 2, _boxes((0, 0, 10, 20), (4, 4, 5, 5)), (500, 375)),
        Sample("2007_000002", img / "2007_000002.jpg", 3, _boxes((0, 1, 8, 6)), (500, 375)),
        Sample("2007_000003", img / "2007_000003.jpg", 0, _boxes((10, 20, 30, 40)), (500, 375)),
    ]
    val = read_voc(tmp_path, split="val", skip_difficult=True)
    assert [(s.image_id, s.class_idx, s.num_boxes) for s in val] == [("2007_000002", 0, 1), ("2007_000001", 1, 1)]
    assert val.class_names == ("cat", "dog")  # names used by the selected, non-difficult objects
    assert len(read_voc(tmp_path, skip_difficult=True)) == 2  # 000003 has only a difficult object
    raw = read_voc(tmp_path, one_based=False, classes=["dog", "cat", "person", "bird"])
    np.testing.assert_array_equal(raw[0].boxes, _boxes((1, 1, 10, 20), (5, 5, 5, 5)))
    assert [s.class_idx for s in raw] == [0, 2, 3]


def test_voc_errors(tmp_path: Path) -> None:
    _voc(tmp_path)
    with _expect_error("expected the VOC image list of split 'test'", tmp_path / "ImageSets/Main/test.txt", None):
        read_voc(tmp_path, split="test")
    listing = _write(tmp_path / "ImageSets" / "Main" / "bad.txt", "2007_000001\n2007_000009\n")
    with _expect_error("references a missing annotation file", listing, 2):
        read_voc(tmp_path, split="bad")
    with _expect_error("unknown class 'cat' \\(not in `classes`\\)", tmp_path / "Annotations/2007_000001.xml", 19):
        read_voc(tmp_path, classes=["dog", "person", "bird"])
    bad = _write(tmp_path / "Annotations" / "2007_000004.xml", _xml("2007_000004.jpg", [("dog", (9, 1, 3, 2))]))
    with _expect_error(r"box \(9, 1, 3, 2\) has x1 < x0", bad, 11):
        read_voc(tmp_path)
    bad.unlink()
    (tmp_path / "JPEGImages" / "2007_000002.jpg").unlink()
    with _expect_error("references a missing image file", tmp_path / "Annotations/2007_000002.xml", None):
        read_voc(tmp_path)
    with _expect_error("expected the VOC Annotations/ folder", tmp_path / "JPEGImages/Annotations", None):
        read_voc(tmp_path / "JPEGImages")


# ------------------------------------------------------------------------------------------------ CUB


def _cub(root: Path) -> None:
    _write(root / "images.txt", "1 001.Albatross/a_1.jpg\n2 002.Auklet/b 2.jpg\n3 002.Auklet/b_3.jpg\n")
    _write(root / "image_class_labels.txt", "1 1\n2 2\n3 2\n")
    _write(root / "bounding_boxes.txt", "1 60.0 27.0 325.0 304.0\n2 1.5 2.0 3.0 4.0\n3 0 0 8 6\n")
    _write(root / "train_test_split.txt", "1 0\n2 1\n3 0\n")
    _write(root / "classes.txt", "1 001.Albatross\n2 002.Auklet\n")
    for rel in ("001.Albatross/a_1.jpg", "002.Auklet/b 2.jpg", "002.Auklet/b_3.jpg"):
        _img(root / "images" / rel)


def test_cub_reader(tmp_path: Path) -> None:
    root = tmp_path / "CUB_200_2011"
    _cub(root)
    ds = read_cub(tmp_path)  # parent folder works too
    assert detect_format(tmp_path) == "cub" and detect_format(root) == "cub"
    assert ds.format == "cub" and ds.root == root and ds.class_names == ("001.Albatross", "002.Auklet")
    assert list(ds) == [
        Sample("001.Albatross/a_1.jpg", root / "images/001.Albatross/a_1.jpg", 0, _boxes((60, 27, 385, 331))),
        Sample("002.Auklet/b_3.jpg", root / "images/002.Auklet/b_3.jpg", 1, _boxes((0, 0, 8, 6))),
    ]
    train = read_dataset(root, split="train")
    assert [(s.image_id, s.class_idx) for s in train] == [("002.Auklet/b 2.jpg", 1)]
    np.testing.assert_array_equal(train[0].boxes, _boxes((1.5, 2, 4.5, 6)))
    assert len(read_cub(root, split="all")) == 3
    (root / "classes.txt").unlink()
    (root / "train_test_split.txt").unlink()
    assert read_cub(root, split="all").class_names is None


@pytest.mark.parametrize(
    ("file", "text", "match", "line"),
    [
        ("bounding_boxes.txt", "1 60 27 325 304\n2 1 2 x 4\n3 0 0 8 6\n", "width must be a number; got 'x'", 2),
        ("bounding_boxes.txt", "1 60 27 325\n", "expected 5 fields", 1),
        ("bounding_boxes.txt", "1 60 27 -3 304\n2 1 2 3 4\n3 0 0 8 6\n", "width and height must be >= 0", 1),
        ("bounding_boxes.txt", "1 60 27 3 4\n2 1 2 3 4\n3 0 0 8 6\n9 1 1 1 1\n", "unknown image id 9", 4),
        ("image_class_labels.txt", "1 1\n2 2\n3 2\n3 1\n", "conflicting duplicate entry for image id 3", 4),
        ("image_class_labels.txt", "1 1\n2 2\n3 7\n", "unknown class id 7", 3),
        ("image_class_labels.txt", "1 1\n2 2\n3 0\n", "class id must be >= 1; got 0", 3),
        ("train_test_split.txt", "1 0\n2 1\n3 2\n", "is_training_image must be 0 or 1; got '2'", 3),
        ("images.txt", "1 001.Albatross/a_1.jpg\n1 x.jpg\n", "duplicate image id 1 \\(first at line 1\\)", 2),
        ("images.txt", "1 001.Albatross/a_1.jpg\nzz x.jpg\n", "image id must be an integer; got 'zz'", 2),
    ],
)
def test_cub_errors(tmp_path: Path, file: str, text: str, match: str, line: int) -> None:
    _cub(tmp_path)
    _write(tmp_path / file, text)
    with _expect_error(match, tmp_path / file, line):
        read_cub(tmp_path)


def test_cub_missing_entries_and_files(tmp_path: Path) -> None:
    _cub(tmp_path)
    _write(tmp_path / "image_class_labels.txt", "1 1\n3 2\n")
    with _expect_error("image id 2 has no entry in image_class_labels.txt", tmp_path / "images.txt", 2):
        read_cub(tmp_path)
    _write(tmp_path / "image_class_labels.txt", "1 1\n2 2\n3 2\n")
    (tmp_path / "images" / "002.Auklet" / "b_3.jpg").unlink()
    with _expect_error("references a missing image file", tmp_path / "images.txt", 3):
        read_cub(tmp_path)
    assert len(read_cub(tmp_path, check_files=False)) == 2
    (tmp_path / "bounding_boxes.txt").unlink()
    with _expect_error("file not found \\(expected the CUB-200-2011 boxes\\)", tmp_path / "bounding_boxes.txt", None):
        read_cub(tmp_path)
    with _expect_error("expected the CUB-200-2011 image list", tmp_path / "images" / "images.txt", None):
        read_cub(tmp_path / "images")


# --------------------------------------------------------------------------------------- wsolevaluation


def test_wsol_boxes(tmp_path: Path) -> None:
    meta = tmp_path / "metadata" / "ILSVRC" / "test"
    data = tmp_path / "dataset" / "ILSVRC"
    _write(meta / "image_ids.txt", "val/b.JPEG\nval/a.JPEG\n")
    _write(meta / "class_labels.txt", "val/a.JPEG,3\nval/b.JPEG,0\n")
    _write(meta / "localization.txt", "val/a.JPEG,1,2,3,4\nval/b.JPEG,5,6,7,8\nval/a.JPEG,0,0,8,6\n")
    _write(meta / "image_sizes.txt", "val/a.JPEG,8,6\nval/b.JPEG,10,12\n")
    _img(data / "val" / "a.JPEG")
    _img(data / "val" / "b.JPEG")
    expected = [
        Sample("val/b.JPEG", data / "val/b.JPEG", 0, _boxes((5, 6, 7, 8)), (10, 12)),
        Sample("val/a.JPEG", data / "val/a.JPEG", 3, _boxes((1, 2, 3, 4), (0, 0, 8, 6)), (8, 6)),
    ]
    ds = read_wsol(meta, data_root=data)
    assert ds.format == "wsol" and list(ds) == expected and ds.class_names is None
    assert list(read_wsol(meta.parent, data_root=data)) == expected  # default split "test"
    assert list(read_dataset(meta.parent, split="test", data_root=data)) == expected
    assert detect_format(meta) == "wsol" and detect_format(meta / "image_ids.txt") == "wsol"
    with _expect_error("file not found", meta.parent / "val" / "image_ids.txt", None):
        read_wsol(meta.parent, split="val", data_root=data)
    with _expect_error(r"missing image file: .*\(image paths are relative to `data_root`", meta / "image_ids.txt", 1):
        read_wsol(meta)


def test_wsol_masks(tmp_path: Path) -> None:
    meta = tmp_path / "val"
    _write(meta / "image_ids.txt", "val/c/x.jpg\nval/c/y.jpg\n")
    _write(meta / "class_labels.txt", "val/c/x.jpg,1\nval/c/y.jpg,2\n")
    _write(
        meta / "localization.txt",
        "val/c/x.jpg,val/c/x_m1.png,val/c/x_ignore.png\nval/c/x.jpg,val/c/x_m2.png,\nval/c/y.jpg,val/c/y_m1.png,\n",
    )
    data, masks = tmp_path / "data", tmp_path / "masks"
    for rel in ("val/c/x.jpg", "val/c/y.jpg"):
        _img(data / rel)
    for rel in ("val/c/x_m1.png", "val/c/x_m2.png", "val/c/x_ignore.png", "val/c/y_m1.png"):
        _img(masks / rel)
    ds = read_wsol(tmp_path, split="val", data_root=data, mask_root=masks)
    assert ds[0] == Sample(
        "val/c/x.jpg",
        data / "val/c/x.jpg",
        1,
        _boxes(),
        None,
        (masks / "val/c/x_m1.png", masks / "val/c/x_m2.png"),
        masks / "val/c/x_ignore.png",
    )
    assert ds[1].mask_paths == (masks / "val/c/y_m1.png",) and ds[1].ignore_path is None
    with _expect_error("references a missing mask file", meta / "localization.txt", 1):
        read_wsol(meta, data_root=data)


@pytest.mark.parametrize(
    ("file", "text", "match", "line"),
    [
        ("class_labels.txt", "a.jpg,1\nb.jpg,x\n", "class must be an integer; got 'x'", 2),
        ("class_labels.txt", "a.jpg,1\nb.jpg\n", "expected 2 fields", 2),
        ("class_labels.txt", "a.jpg,1\nb.jpg,2\nb.jpg,3\n", "conflicting class for 'b.jpg': 3 here, 2 at line 2", 3),
        ("class_labels.txt", "a.jpg,1\nb.jpg,2\nc.jpg,3\n", "unknown image 'c.jpg'", 3),
        ("localization.txt", "a.jpg,1,2,3,4\nb.jpg,1,2,3\n", "expected 5 fields \\(path,x0,y0,x1,y1\\); got 4", 2),
        ("localization.txt", "a.jpg,1,2,3,4\nb.jpg,1,2,0,4\n", "has x1 < x0", 2),
        ("localization.txt", "z.jpg,1,2,3,4\n", "unknown image 'z.jpg'", 1),
        ("image_sizes.txt", "a.jpg,8,0\n", "h must be >= 1; got 0", 1),
        ("image_ids.txt", "a.jpg\nb.jpg\na.jpg\n", "duplicate image 'a.jpg' \\(first at line 1\\)", 3),
    ],
)
def test_wsol_errors(tmp_path: Path, file: str, text: str, match: str, line: int) -> None:
    _write(tmp_path / "image_ids.txt", "a.jpg\nb.jpg\n")
    _write(tmp_path / "class_labels.txt", "a.jpg,1\nb.jpg,2\n")
    _write(tmp_path / file, text)
    with _expect_error(match, tmp_path / file, line):
        read_wsol(tmp_path, check_files=False)


def test_wsol_image_without_label(tmp_path: Path) -> None:
    _write(tmp_path / "image_ids.txt", "a.jpg\nb.jpg\n")
    _write(tmp_path / "class_labels.txt", "a.jpg,1\n")
    with _expect_error("image 'b.jpg' has no entry in class_labels.txt", tmp_path / "image_ids.txt", 2):
        read_wsol(tmp_path, check_files=False)
    (tmp_path / "class_labels.txt").unlink()
    with _expect_error("expected the wsolevaluation class labels", tmp_path / "class_labels.txt", None):
        read_wsol(tmp_path, check_files=False)


# --------------------------------------------------------------------------------------- Tiny-ImageNet


def _tiny(root: Path) -> None:
    _write(root / "wnids.txt", "n01443537\nn01440764\n")  # deliberately not sorted: the file order counts
    _write(root / "words.txt", "n01440764\ttench, Tinca tinca\nn01443537\tgoldfish\nn00000001\tentity\n")
    _write(
        root / "val" / "val_annotations.txt",
        "val_0.JPEG\tn01440764\t0\t3\t63\t63\nval_1.JPEG\tn01443537\t9\t0\t59\t63\n",
    )
    for name in ("val_0.JPEG", "val_1.JPEG"):
        _img(root / "val" / "images" / name, (64, 64))
    for wnid in ("n01443537", "n01440764"):
        _write(root / "train" / wnid / f"{wnid}_boxes.txt", f"{wnid}_0.JPEG\t1\t0\t53\t63\n{wnid}_1.JPEG\t0\t0\t0\t0\n")
        for i in (0, 1):
            _img(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", (64, 64))


def test_tiny_imagenet_reader(tmp_path: Path) -> None:
    _tiny(tmp_path)
    ds = read_tiny_imagenet(tmp_path)
    assert detect_format(tmp_path) == "tiny_imagenet" and read_dataset(tmp_path) == ds
    assert ds.wnids == ("n01443537", "n01440764") and ds.class_names == ("goldfish", "tench, Tinca tinca")
    v = tmp_path / "val" / "images"
    # inclusive indices -> (x0, y0, x1 + 1, y1 + 1): a box reaching 63 ends at the right/bottom edge 64
    assert list(ds) == [
        Sample("val_0.JPEG", v / "val_0.JPEG", 1, _boxes((0, 3, 64, 64)), (64, 64)),
        Sample("val_1.JPEG", v / "val_1.JPEG", 0, _boxes((9, 0, 60, 64)), (64, 64)),
    ]
    train = read_dataset(tmp_path, split="train")
    assert [(s.image_id, s.class_idx) for s in train] == [
        ("n01443537_0.JPEG", 0),
        ("n01443537_1.JPEG", 0),
        ("n01440764_0.JPEG", 1),
        ("n01440764_1.JPEG", 1),
    ]
    assert train[0].path == tmp_path / "train/n01443537/images/n01443537_0.JPEG"
    np.testing.assert_array_equal(train[0].boxes, _boxes((1, 0, 54, 64)))
    np.testing.assert_array_equal(train[1].boxes, _boxes((0, 0, 1, 1)))  # a single pixel
    # ImageNet-1k class order from a labels file
    in1k = read_tiny_imagenet(tmp_path, classes=_write(tmp_path / "synset_words.txt", SYNSET_WORDS))
    assert [s.class_idx for s in in1k] == [0, 1] and in1k.wnids == tuple(WNIDS)
    (tmp_path / "words.txt").unlink()
    assert read_tiny_imagenet(tmp_path).class_names == ("n01443537", "n01440764")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("val_0.JPEG\tn09999999\t0\t3\t63\t63\n", "unknown wnid 'n09999999'"),
        ("val_0.JPEG\tn01440764\t0\t3\t63\n", "expected 6 fields"),
        ("val_0.JPEG\tn01440764\t0\t3\t2.5\t63\n", "x1 must be an integer; got '2.5'"),
        ("val_0.JPEG\tn01440764\t5\t3\t4\t63\n", r"box \(5, 3, 4, 63\) has x1 < x0"),
        ("val_0.JPEG\tn01440764\t0\t3\t63\t63\nval_0.JPEG\tn01443537\t0\t3\t63\t63\n", "conflicting class"),
        ("val_9.JPEG\tn01440764\t0\t3\t63\t63\n", "references a missing image file"),
    ],
)
def test_tiny_imagenet_errors(tmp_path: Path, text: str, match: str) -> None:
    _tiny(tmp_path)
    ann = _write(tmp_path / "val" / "val_annotations.txt", "\n" + text)
    with _expect_error(match, ann, text.count("\n") + 1):
        read_tiny_imagenet(tmp_path)


def test_tiny_imagenet_missing_files(tmp_path: Path) -> None:
    _tiny(tmp_path)
    boxes = tmp_path / "train" / "n01440764" / "n01440764_boxes.txt"
    boxes.unlink()
    with _expect_error("expected the Tiny-ImageNet boxes of n01440764", boxes, None):
        read_tiny_imagenet(tmp_path, split="train")
    (tmp_path / "wnids.txt").unlink()
    with _expect_error("expected the Tiny-ImageNet class list", tmp_path / "wnids.txt", None):
        read_tiny_imagenet(tmp_path)


# ------------------------------------------------------------------------------------------------ CSV


def test_csv_reader(tmp_path: Path) -> None:
    _write(
        tmp_path / "boxes.csv",
        "file,class_idx,wnid,w,h,x0,y0,x1,y1,mask\r\n"
        "images/a.JPEG,1,n01443537,8,6,1,2,3,4,masks/a.png\r\n"
        "images/b.JPEG,2,n01484850,8,6,0,0,8,6,\r\n"
        "images/a.JPEG,1,n01443537,8,6,0.5,0.5,7.5,5.5,masks/a.png\r\n",
    )
    _write(tmp_path / "synset_words.txt", SYNSET_WORDS)
    for name in ("images/a.JPEG", "images/b.JPEG", "masks/a.png"):
        _img(tmp_path / name)
    ds = read_csv(tmp_path / "boxes.csv")
    assert detect_format(tmp_path) == "csv" and detect_format(tmp_path / "boxes.csv") == "csv"
    assert read_dataset(tmp_path) == ds
    assert (
        ds.format == "csv"
        and ds.root == tmp_path
        and ds.wnids == tuple(WNIDS)
        and ds.class_names[2] == "great white shark"
    )
    a, b, m = tmp_path / "images/a.JPEG", tmp_path / "images/b.JPEG", tmp_path / "masks/a.png"
    assert list(ds) == [
        Sample("images/a.JPEG", a, 1, _boxes((1, 2, 3, 4), (0.5, 0.5, 7.5, 5.5)), (8, 6), (m,)),
        Sample("images/b.JPEG", b, 2, _boxes((0, 0, 8, 6)), (8, 6)),
    ]


def test_csv_split_folders(tmp_path: Path) -> None:
    # the camloc.data.synthetic layout: root/classes.txt, root/{train,val}/labels.csv (+ classes.txt)
    _write(tmp_path / "classes.txt", "square\ndisk\n")
    for split, cls in (("train", 0), ("val", 1)):
        _img(tmp_path / split / "images" / "000000.png")
        _img(tmp_path / split / "masks" / "000000.png")
        _write(
            tmp_path / split / "labels.csv",
            f"file,class_idx,x0,y0,x1,y1,w,h,mask\nimages/000000.png,{cls},1,2,5,6,8,6,masks/000000.png\n",
        )
    assert detect_format(tmp_path) == "csv"
    val = read_dataset(tmp_path)  # default: val/
    assert val.class_names == ("square", "disk") and val.root == tmp_path / "val"
    assert list(val) == [
        Sample(
            "images/000000.png",
            tmp_path / "val/images/000000.png",
            1,
            _boxes((1, 2, 5, 6)),
            (8, 6),
            (tmp_path / "val/masks/000000.png",),
        )
    ]
    assert read_dataset(tmp_path, split="train")[0].class_idx == 0
    with _expect_error("expected the folder of split 'test'", tmp_path / "test", None):
        read_csv(tmp_path, split="test")
    with pytest.raises(CamlocValueError, match="`split` must be None when `path` is a CSV file"):
        read_csv(tmp_path / "val" / "labels.csv", split="val")
    (tmp_path / "val" / "labels.csv").unlink()
    (tmp_path / "train" / "labels.csv").unlink()
    with _expect_error("no CSV with a header", tmp_path, None):
        read_csv(tmp_path)


def test_csv_minimal_and_wnid_only(tmp_path: Path) -> None:
    _img(tmp_path / "x.png")
    p = _write(tmp_path / "ann.csv", "file,class_idx,x0,y0,x1,y1\nx.png,4,1,1,2,2\nx.png,4,,,,\n")
    ds = read_csv(p)
    assert ds.class_names is None and ds.wnids is None
    assert list(ds) == [Sample("x.png", tmp_path / "x.png", 4, _boxes((1, 1, 2, 2)))]
    p = _write(tmp_path / "ann.csv", "x0,y0,x1,y1,wnid,file\n1,1,2,2,n01484850,x.png\n")
    ds = read_csv(p, classes=WNIDS)
    assert ds[0].class_idx == 2 and ds.wnids == tuple(WNIDS)
    cls = _write(tmp_path / "classes.txt", "cat\ndog\nbig bird\n")
    p = _write(tmp_path / "ann.csv", "file,class_idx,x0,y0,x1,y1\nx.png,2,1,1,2,2\n")
    assert read_csv(p).class_names == ("cat", "dog", "big bird")
    cls.unlink()


@pytest.mark.parametrize(
    ("rows", "match", "line"),
    [
        ("a.png,0,1,2,3\n", "expected 6 columns", 2),
        ("a.png,0,1,2,x,4\n", "x1 must be a number; got 'x'", 2),
        ("a.png,0,1,2,nan,4\n", "x1 must be a finite number", 2),
        ("a.png,0,3,2,1,4\n", r"box \(3, 2, 1, 4\) has x1 < x0", 2),
        ("a.png,0,1,5,3,4\n", "has y1 < y0", 2),
        ("a.png,0,-1,2,3,4\n", "negative corner", 2),
        ("a.png,0,1,2,3,4\n\na.png,1,1,2,3,4\n", "conflicting class for 'a.png': 1 here, 0 at line 2", 4),
        ("a.png,x,1,2,3,4\n", "class_idx must be an integer; got 'x'", 2),
        ("a.png,-2,1,2,3,4\n", "class_idx must be >= 0", 2),
        ("a.png,0,1,2,,4\n", "must be all set or all empty", 2),
        ("zz.png,0,1,2,3,4\n", "references a missing image file", 2),
        (",0,1,2,3,4\n", "empty file column", 2),
        ("a.png,0,1,2,3,4\na.png,7,1,2,3,4\n", "conflicting class", 3),
    ],
)
def test_csv_row_errors(tmp_path: Path, rows: str, match: str, line: int) -> None:
    _img(tmp_path / "a.png")
    p = _write(tmp_path / "b.csv", "file,class_idx,x0,y0,x1,y1\n" + rows)
    with _expect_error(match, p, line):
        read_csv(p)


def test_csv_file_level_errors(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    p = tmp_path / "b.csv"
    _write(p, "file,x0,y0,x1,y1\na.png,1,2,3,4\n")
    with _expect_error("header lacks column\\(s\\) class_idx", p, 1):
        read_csv(p)
    _write(p, "file,class_idx,x0,y0,x1\n")
    with _expect_error("header lacks column\\(s\\) y1", p, 1):
        read_csv(p)
    _write(p, "")
    with _expect_error("empty file", p, None):
        read_csv(p)
    _write(p, "file,class_idx,w,h,x0,y0,x1,y1\na.png,0,8,6,1,2,3,4\na.png,0,8,7,1,2,3,4\n")
    with _expect_error("conflicting size \\(8, 7\\)", p, 3):
        read_csv(p)
    _write(p, "file,class_idx,wnid,x0,y0,x1,y1\na.png,0,n01443537,1,2,3,4\n")
    with _expect_error("class_idx 0 disagrees with wnid n01443537 \\(index 1", p, 2):
        read_csv(p, classes=WNIDS)
    _write(p, "file,class_idx,x0,y0,x1,y1\na.png,5,1,2,3,4\n")
    with _expect_error("class_idx 5 out of range: `classes` has 3 classes", p, 2):
        read_csv(p, classes=WNIDS)
    _write(p, "file,class_idx,x0,y0,x1,y1,mask\na.png,0,1,2,3,4,m.png\n")
    with _expect_error("references a missing mask file", p, 2):
        read_csv(p)
    with _expect_error("file not found", tmp_path / "none.csv", None):
        read_csv(tmp_path / "none.csv")
    _write(p, 'file,class_idx,x0,y0,x1,y1\na.png,0,1,2,3,4\na.png,"0"x,1,2,3,4\n')
    with _expect_error("malformed CSV", p, 3):
        read_csv(p)
    p.write_bytes(b"file,class_idx,x0,y0,x1,y1\na\xff.png,0,1,2,3,4\n")
    with _expect_error("not UTF-8 text", p, None):
        read_csv(p)
    _write(p, "\n\nfile,x0,y0,x1,y1\n")
    with _expect_error("header lacks column", p, 3):
        read_csv(p)
    _write(p, "file,class_idx,x0,y0,x1,y1\na.png,0,1,2,3,4\na.png,3,1,2,3,4\n")
    with _expect_error("class_idx 3 out of range: `classes` has 3 classes", p, 3):
        read_csv(p, classes=WNIDS)


# --------------------------------------------------------------------------------------- read_dataset


def test_read_dataset_options_and_detection_errors(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    p = _write(tmp_path / "b.csv", "file,class_idx,x0,y0,x1,y1\na.png,0,1,2,3,4\n")
    assert read_dataset(p, format="csv", check_files=False)[0].class_idx == 0
    with pytest.raises(CamlocValueError, match="`split` must be None when `path` is a CSV file"):
        read_dataset(p, split="val")
    with pytest.raises(CamlocTypeError, match=r"`options` must be options of read_csv .*; got bogus"):
        read_dataset(p, bogus=1)
    with pytest.raises(CamlocValueError, match="`format` must be 'auto' or one of 'ilsvrc_xml'"):
        read_dataset(p, format="kitti")  # not a format camloc reads
    with pytest.raises(CamlocValueError, match="`path` must be a dataset folder in a known layout"):
        detect_format(_img(tmp_path / "empty" / "x.png").parent)
    with pytest.raises(CamlocValueError, match="`path` must be an annotation CSV"):
        detect_format(_write(tmp_path / "other.csv", "a,b\n1,2\n"))
    with _expect_error("not found", tmp_path / "missing", None):
        detect_format(tmp_path / "missing")
    with pytest.raises(CamlocTypeError, match=r"`path` must be a str or os\.PathLike"):
        read_dataset(3)


def test_csv_without_box_columns_gives_image_level_labels(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    ds = read_csv(_write(tmp_path / "l.csv", "file,class_idx\na.png,2\nb.png,0\n"))
    assert [(s.path.name, s.class_idx, s.boxes.shape) for s in ds.samples] == [
        ("a.png", 2, (0, 4)),
        ("b.png", 0, (0, 4)),
    ]
    p = _write(tmp_path / "m.csv", "file,class_idx,x0,y0\na.png,2,1,1\n")  # some box columns: all four needed
    with _expect_error("header lacks column\\(s\\) x1, y1", p, 1):
        read_csv(p)
