"""``camloc compare``: several methods' evaluation, held-out calibration and timing in one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from camloc.calibrate import calibrate_samples
from camloc.cli import main
from camloc.compare import compare_methods, parse_method_list, time_methods
from camloc.errors import CamlocValueError
from camloc.evaluate import evaluate_samples
from conftest import synthetic_run


@pytest.fixture(scope="module")
def boxed(tmp_path_factory) -> tuple[Path, Path, list, object, object]:
    from camloc.checkpoint import load_checkpoint
    from camloc.data.annotations import read_dataset

    root, ckpt = synthetic_run(tmp_path_factory.mktemp("compare"), val_per_class=4)
    labels = root / "val" / "labels.csv"
    model, info = load_checkpoint(ckpt)
    return labels, ckpt, list(read_dataset(labels).samples), model, info


def test_parse_method_list_splits_outside_parentheses_and_checks_each() -> None:
    got = parse_method_list("cam, multiscale(scales=1,2;norm=max),best")
    assert got == [("cam", "cam", {}), ("multiscale(scales=1,2;norm=max)", "multiscale",
                                        {"scales": "1,2", "norm": "max"}), ("best", "best", {})]  # fmt: skip
    with pytest.raises(CamlocValueError, match=r"`--methods` must be one of cam, backprop"):
        parse_method_list("cam,nope", option="--methods")
    with pytest.raises(CamlocValueError, match=r"`methods` must be parameters of method 'flip'"):
        parse_method_list("flip(scalez=1)")
    with pytest.raises(CamlocValueError, match=r"each method once"):
        parse_method_list("cam,flip,cam")
    with pytest.raises(CamlocValueError, match=r"at least one method"):
        parse_method_list(" , ")


def test_rows_are_the_evaluation_and_calibration_of_each_method(boxed) -> None:
    _, _, samples, model, info = boxed
    comp = compare_methods(samples, model, info, "flip,cam", holdout_folds=2, workers=0, rounds=1, time_batch=3)
    assert [r.label for r in comp.rows] == ["flip", "cam"]  # the order asked
    for row, name in zip(comp.rows, ("flip", "cam")):
        ref = evaluate_samples(samples, model, info, method=name, workers=0)
        assert row.images == ref.n_box_images == len(samples)
        for k in ("top1_cls", "top1_loc", "gt_known_loc", "maxboxacc", "maxboxacc_v2"):
            assert row.metrics[k] == pytest.approx(ref.metrics[k], abs=1e-12)
        assert row.breakdown == ref.breakdown
        calib, _ = calibrate_samples(samples, model, info, method=name, holdout_folds=2, workers=0)
        assert row.holdout["auto"] == calib.holdout["auto"]
        assert row.holdout["ceiling"] == calib.holdout["oracle"]["largest"]
    cam = comp.rows[1]
    assert cam.relative_time == pytest.approx(1.0)
    assert comp.rows[0].relative_time == pytest.approx(comp.rows[0].seconds_per_image / cam.seconds_per_image)
    md = comp.to_markdown().splitlines()
    assert md[2].startswith("| method | images | top-1 cls") and "held out (2 folds)" in md[2]
    flip = next(line for line in md if line.startswith("| flip |"))
    assert f"| {100 * comp.rows[0].metrics['gt_known_loc']:.1f} |" in flip
    doc = comp.to_dict()
    assert doc["timing"]["batch"] == 3 and doc["timing"]["rounds"] == 1 and doc["timing"]["reference"] == "cam"
    assert doc["timing"]["reference_seconds_per_image"] == cam.seconds_per_image
    assert [r["label"] for r in doc["rows"]] == ["flip", "cam"]


def test_cam_is_timed_as_the_reference_even_when_not_listed(boxed) -> None:
    _, _, samples, model, info = boxed
    comp = compare_methods(samples[:3], model, info, ["backprop"], workers=0, rounds=1)
    [row] = comp.rows
    assert row.holdout is None and row.relative_time > 0
    ref = comp.timing["reference_seconds_per_image"]
    assert ref > 0 and row.relative_time == pytest.approx(row.seconds_per_image / ref)
    assert "held out (" not in comp.to_markdown()


def test_time_methods_runs_a_warm_up_and_each_round_interleaved() -> None:
    calls: list[str] = []

    class Counting:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, x: torch.Tensor, *, classes) -> None:
            calls.append(self.name)
            assert classes(torch.tensor([[0.0, 1.0]] * len(x))).tolist() == [[1, 0], [1, 1]]

    got = time_methods({"a": Counting("a"), "b": Counting("b")}, torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]),
                       rounds=2)  # fmt: skip
    assert calls == ["a", "b"] * 3 and set(got) == {"a", "b"} and all(v >= 0 for v in got.values())


def test_cli_writes_the_table_and_its_json(boxed, tmp_path: Path, capsys) -> None:
    labels, ckpt, samples, _, _ = boxed
    out = tmp_path / "cmp"
    argv = ["compare", str(labels), "--checkpoint", str(ckpt), "--workers", "0", "--rounds", "1", "--quiet"]
    assert main([*argv, "--methods", "cam,flip(fuse=max)", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == json.loads((out / "comparison.json").read_text())
    assert [r["label"] for r in doc["rows"]] == ["cam", "flip(fuse=max)"]
    assert doc["rows"][1]["method"] == "flip" and doc["rows"][1]["method_args"] == {"fuse": "max"}
    assert doc["data"]["images"] == len(samples)
    md = (out / "comparison.md").read_text()
    assert "| flip(fuse=max) | 8 |" in md
    bad = tmp_path / "bad"
    assert main([*argv, "--methods", "cam,nope", "--out", str(bad)]) == 2
    assert "`--methods` must be one of" in capsys.readouterr().err
    assert main([*argv, "--holdout", "1", "--out", str(bad)]) == 2
    assert "`--holdout` must be >= 2" in capsys.readouterr().err
    assert not bad.exists()  # refused before anything was written
