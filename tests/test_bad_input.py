"""Bad input on the command line: one line naming the option, exit 2, no traceback, and no half-made output.

Each case is a mistake a user makes (an output path that is a file, a corrupt calibration, a text file given as
weights, a worker's error), checked through ``main([...])`` as the console script runs it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from camloc.calibrate import Calibration, load_calibration
from camloc.cli import _one_line, main
from camloc.errors import CamlocValueError, ImageLoadError
from camloc.methods.registry import MAX_NESTING, parse_method_spec, resolve_method


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    p = tmp_path / "a.png"
    Image.new("RGB", (48, 40), (200, 30, 30)).save(p)
    return p


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("camloc: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_out_must_be_a_folder_or_a_file_as_the_command_writes(tmp_path: Path, photo: Path, capsys) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("keep me")
    assert main(["explain", str(photo), "--out", str(a_file), "--quiet"]) == 2
    assert "`--out` must be a folder; got the existing file" in _error(capsys)
    assert a_file.read_text() == "keep me"
    a_dir = tmp_path / "calib.json"
    a_dir.mkdir()
    assert main(["calibrate", str(tmp_path / "boxes.csv"), "--out", str(a_dir)]) == 2
    assert "`--out` must be a file path; got the existing folder" in _error(capsys)
    assert main(["export", "--out", str(a_dir)]) == 2
    assert "`--out` must be a file path" in _error(capsys)
    assert main(["evaluate", str(tmp_path / "boxes.csv"), "--out", str(a_file / "sub")]) == 2
    assert f"`--out` must be under a folder; {a_file} is a file" in _error(capsys)
    assert main(["fit", str(tmp_path), "--cache", str(a_file)]) == 2
    assert "`--cache` must be a folder" in _error(capsys)


def test_an_os_error_while_writing_is_one_line(monkeypatch, capsys) -> None:
    from camloc import cli

    def cannot_write(args):
        raise PermissionError(13, "Permission denied", "/somewhere/out.json")

    monkeypatch.setattr(cli, "cmd_models", cannot_write)
    assert main(["models"]) == 2
    assert _error(capsys) == "camloc: error: Permission denied: /somewhere/out.json"


def test_workers_and_device_are_checked_before_any_work(tmp_path: Path, photo: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["explain", str(photo), "--out", str(out), "--workers", "-1"]) == 2
    assert "`--workers` must be >= 0; got -1" in _error(capsys)
    if not torch.cuda.is_available():
        for argv in (["fit", str(tmp_path)], ["boxhead", str(tmp_path), "--supervision", "pseudo"]):
            assert main([*argv, "--out", str(tmp_path / "x"), "--device", "cuda"]) == 2
            assert "`--device` cuda was asked for but no CUDA device is available" in _error(capsys)
    assert not out.exists()


def test_corrupt_files_given_as_options(tmp_path: Path, photo: Path, capsys) -> None:
    binary = tmp_path / "random.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    out = tmp_path / "run"
    assert main(["explain", str(photo), "--out", str(out), "--calibration", str(binary)]) == 2
    assert "`calibration` must be a JSON file written by camloc calibrate" in _error(capsys)
    assert main(["explain", str(photo), "--out", str(out), "--checkpoint", str(binary)]) == 2
    msg = _error(capsys)
    assert "`checkpoint` must be a camloc checkpoint" in msg and "weights_only set to False" not in msg
    assert main(["explain", str(photo), "--out", str(out), "--weights", str(text)]) == 2
    assert "`weights` must be a torch or safetensors checkpoint" in _error(capsys)
    assert not out.exists()


def test_a_run_that_fails_at_its_first_batch_leaves_no_folder(tmp_path: Path, photo: Path, capsys) -> None:
    bad = tmp_path / "head.pt"
    bad.write_bytes(b"\x80\x04 not a pickle")
    out = tmp_path / "run"
    assert main(["explain", str(photo), "--out", str(out), "--box-head", str(bad), "--quiet"]) == 2
    assert "`box_head`" in _error(capsys)
    assert not out.exists()
    # the same failure in a folder that already holds the user's files: those stay, camloc's run files go
    out.mkdir()
    (out / "mine.txt").write_text("x")
    assert main(["explain", str(photo), "--out", str(out), "--box-head", str(bad), "--quiet"]) == 2
    _error(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    # evaluate: a class index the model does not have is found at the first batch
    data = tmp_path / "boxes.csv"
    data.write_text(f"file,class_idx,w,h,x0,y0,x1,y1\n{photo.name},5000,48,40,1,1,30,30\n")
    ev = tmp_path / "ev"
    assert main(["evaluate", str(data), "--out", str(ev), "--quiet"]) == 2
    assert "class indices in [0, 1000)" in _error(capsys)
    assert not ev.exists()


def test_a_worker_raised_camloc_error_keeps_only_its_message() -> None:
    # torch's DataLoader re-raises a worker's exception with the worker's traceback in its text
    e = ImageLoadError(
        "Caught ImageLoadError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 3, in f\n    raise X\n'
        "camloc.errors.ImageLoadError: `image` must be a readable image; got b.jpg\n"
    )
    assert _one_line(e) == "`image` must be a readable image; got b.jpg"
    assert _one_line(CamlocValueError("plain")) == "plain"


def _calibration_doc() -> dict:
    from camloc.boxes import BoxRule

    return Calibration(rule=BoxRule(), method="cam").to_dict()


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("n_images", "abc", "malformed entry"),
        ("score", "abc", "malformed entry"),
        ("image_keys", 5, "'image_keys' is a JSON list"),
        ("candidates", 5, "'candidates' is a JSON list"),
        ("data", [1, 2], "'data' is a JSON dict"),
        ("baseline", "abc", "'baseline' is a JSON dict"),
        ("method", 7, "'method' is a method name"),
    ],
)
def test_a_hand_edited_calibration_is_a_camloc_error(tmp_path: Path, key: str, value: object, text: str) -> None:
    doc = _calibration_doc()
    assert load_calibration_from(tmp_path, doc).method == "cam"
    doc[key] = value
    with pytest.raises(CamlocValueError, match=text):
        load_calibration_from(tmp_path, doc)


def load_calibration_from(tmp_path: Path, doc: dict) -> Calibration:
    p = tmp_path / "calib.json"
    p.write_text(json.dumps(doc))
    return load_calibration(p)


@pytest.mark.parametrize(
    ("method", "args", "text"),
    [
        ("affinity", {"scale": "nan"}, "a finite number"),
        ("affinity", {"beta": math.inf}, "a finite number"),
        ("hires", {"scale": "9"}, r"in \[0.05, 8.0\]"),
        ("multiscale", {"scales": "1,20"}, r"in \[0.05, 8.0\]"),
        ("affinity", {"iters": 65}, r"in \[0, 64\]"),
        ("dilate", {"stages": 5}, r"in \[1, 4\]"),
        ("flip", {"base": "affinity(scale=nan)"}, "a finite number"),
    ],
)
def test_method_arguments_must_be_finite_and_bounded(method: str, args: dict, text: str) -> None:
    with pytest.raises(CamlocValueError, match=text):
        resolve_method(method, args)


def test_nesting_depth_is_limited() -> None:
    ok = "base=flip(" * (MAX_NESTING - 1) + "base=cam" + ")" * (MAX_NESTING - 1)
    assert parse_method_spec(f"flip({ok})")[0] == "flip"
    too_deep = "base=flip(" * MAX_NESTING + "base=cam" + ")" * MAX_NESTING
    with pytest.raises(CamlocValueError, match=f"nested at most {MAX_NESTING} deep"):
        parse_method_spec(f"flip({too_deep})")


def test_a_missing_fonts_folder_is_refused(tmp_path: Path, photo: Path, capsys) -> None:
    argv = ["synthetic", str(tmp_path / "s"), "--kind", "text", "--photos", str(photo.parent)]
    assert main([*argv, "--fonts", str(tmp_path / "nonexistent")]) == 2
    assert "`--fonts` must be a folder of .ttf/.otf fonts" in _error(capsys)
    assert not (tmp_path / "s").exists()


def test_a_box_outside_its_declared_image_is_an_annotation_error(tmp_path: Path, photo: Path) -> None:
    from camloc.data.annotations import read_dataset
    from camloc.errors import AnnotationError

    csv = tmp_path / "boxes.csv"
    csv.write_text(f"file,class_idx,w,h,x0,y0,x1,y1\n{photo.name},1,48,40,1,1,49,41\n")  # 1 px over: rounding
    assert read_dataset(csv).samples[0].boxes.tolist() == [[1, 1, 49, 41]]
    csv.write_text(f"file,class_idx,w,h,x0,y0,x1,y1\n{photo.name},1,48,40,1,1,441,30\n")
    with pytest.raises(AnnotationError, match=r"boxes.csv:2: box \(1, 1, 441, 30\) lies outside the 48x40 image"):
        read_dataset(csv)
