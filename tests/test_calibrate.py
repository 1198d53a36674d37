"""Calibration (camloc.calibrate, ``camloc calibrate``, ``--calibration``): sets whose best rule is known by
construction, held-out numbers, calib.json round trip, bad input, the CLI end to end with a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camloc.boxes import PAPER_RULE, BoxRule
from camloc.calibrate import (
    Calibration,
    Candidate,
    calibrate_samples,
    candidates,
    choose_rule,
    collect_table,
    fit_candidate,
    holdout,
    load_calibration,
    objective_value,
    rule_of,
    score_rule,
    split_indices,
    table_from_maps,
)
from camloc.data.annotations import Sample
from camloc.errors import CamlocError
from camloc.evaluate import evaluate_samples
from camloc.models.registry import ModelInfo, Preprocess
from conftest import BrightSpot


def _ring_set() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """GT box = core + ring; a halo around it. The box is right exactly for thresholds in (halo, ring]:
    (0.3, 0.6], (0.4, 0.5], (0.35, 0.55] -> the thresholds right for all: 0.41 ... 0.50."""
    maps, gts = [], []
    for ring, halo in [(0.6, 0.3), (0.5, 0.4), (0.55, 0.35)] * 2:
        m = np.zeros((40, 40), np.float32)
        m[4:36, 4:36] = halo  # halo box: IoU 400 / 1024 < 0.5
        m[10:30, 10:30] = ring
        m[15:25, 15:25] = 1.0  # core box: IoU 100 / 400 < 0.5
        maps.append(m)
        gts.append(np.array([[10, 10, 30, 30]], np.float64))
    return maps, gts


def test_fixed_threshold_is_the_middle_of_the_thresholds_right_for_every_image():
    table = table_from_maps(*_ring_set())
    rule = fit_candidate(table, Candidate("largest", 0.0, "fixed"))
    assert rule == BoxRule(threshold=0.45)  # the middle of 0.41 ... 0.50
    ious = score_rule(table, rule)
    assert np.allclose(ious, 1.0) and objective_value(table, ious, "gt_known") == 1.0
    assert objective_value(table, score_rule(table, PAPER_RULE), "gt_known") == 0.0  # 0.2 boxes the halo
    # the table's IoUs are those of the rule applied to each map
    maps, _ = _ring_set()
    for t in (0.2, 0.4, 0.41, 0.5, 0.51):
        r = BoxRule(threshold=t)
        want = [float(np.asarray(r.box(m)).tolist() == [10, 10, 30, 30]) for m in maps]
        assert (score_rule(table, r) == 1.0).astype(float).tolist() == want


def _per_image_set(n: int = 24) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Background b, object body b + 0.12 (the GT box) and a small bright core: the box is right for thresholds in
    (b, b + 0.12] only, with b from 0.1 to 0.7: no fixed threshold serves all, a threshold that follows the map's
    statistics does."""
    maps, gts = [], []
    for i in range(n):
        b, s = 0.1 + 0.6 * (i % 7) / 6, i % 5
        m = np.full((40, 40), b, np.float32)
        m[5 + s : 30 + s, 6:34] = b + 0.12
        m[10 + s : 14 + s, 10:14] = 1.0
        maps.append(m)
        gts.append(np.array([[6, 5 + s, 34, 30 + s]], np.float64))
    return maps, gts


def test_per_image_threshold_model_beats_every_fixed_threshold_and_is_chosen():
    table = table_from_maps(*_per_image_set())
    fixed = objective_value(
        table, score_rule(table, fit_candidate(table, Candidate("largest", 0.0, "fixed"))), "gt_known"
    )
    assert fixed <= 0.34  # at most 2 of the 7 background levels share a right threshold
    rule, cand, records = choose_rule(table)
    assert cand.mode == "model" and rule.threshold_mode == "model"
    assert objective_value(table, score_rule(table, rule), "gt_known") == 1.0
    by_name = {r["name"]: r for r in records}
    assert by_name["largest/model"]["cv_score"] == 1.0 and by_name["largest/fixed"]["cv_score"] < 0.5
    # held out: each half calibrated on the other
    ho = holdout(table, folds=2)
    assert ho["auto"]["gt_known_loc"] == 1.0 and ho["paper"]["gt_known_loc"] < 0.5
    assert [c["fold"] for c in ho["chosen"]] == ["0/2", "1/2"] and ho["images"] == 24
    # the model applied to the maps directly gives the same boxes as the table says
    maps, gts = _per_image_set()
    assert all(rule.box(m).tolist() == g[0].tolist() for m, g in zip(maps, gts))


def test_otsu_is_chosen_when_it_is_right_and_simpler():
    maps, gts = [], []
    for i in range(9):  # alternating: object 1.0 on background 0.6 / object body 0.4 on 0.1 with a bright core
        s = i % 4
        if i % 3 == 0:
            m = np.full((40, 40), 0.6, np.float32)
            m[8 + s : 24 + s, 6:30] = 1.0
            g = [6, 8 + s, 30, 24 + s]
        else:
            m = np.full((40, 40), 0.1, np.float32)
            m[5:35, 4 + s : 30 + s] = 0.4
            m[12:16, 10 + s : 14 + s] = 1.0
            g = [4 + s, 5, 30 + s, 35]
        maps.append(m)
        gts.append(np.array([g], np.float64))
    table = table_from_maps(maps, gts)
    rule, cand, _ = choose_rule(table, cands=candidates(table.specs, ("fixed", "otsu")))
    assert cand == Candidate("largest", 0.0, "otsu") and rule == BoxRule(threshold_mode="otsu")


def test_mass_rule_is_chosen_where_the_largest_component_is_a_distractor():
    maps, gts = [], []
    for i in range(6):
        m = np.zeros((30, 40), np.float32)
        m[2:14, 2:14] = 0.3 + 0.01 * i  # large dim distractor (144 px, mass ~45)
        m[16:26, 24:34] = 1.0  # the object (100 px, mass 100)
        maps.append(m)
        gts.append(np.array([[24, 16, 34, 26]], np.float64))
    table = table_from_maps(maps, gts)
    rule, cand, _ = choose_rule(table, cands=candidates(table.specs, ("fixed",)))
    # largest at t > 0.35 is right too; the mass rule is right at every threshold -> both reach 1.0, largest first
    assert objective_value(table, score_rule(table, rule), "gt_known") == 1.0
    mass = fit_candidate(table, Candidate("mass", 0.0, "fixed"))
    assert np.allclose(table.iou[:, table.specs.index(("mass", 0.0)), 1:], 1.0)  # mass: right at every t > 0
    assert objective_value(table, score_rule(table, mass), "gt_known") == 1.0
    assert objective_value(table, score_rule(table, PAPER_RULE), "gt_known") == 0.0
    assert cand.rule in ("largest", "mass")


def test_objectives():
    maps, gts = _ring_set()
    table = table_from_maps(maps, gts, top1_ok=[True, False] * 3)
    ious = score_rule(table, BoxRule(threshold=0.45))
    assert objective_value(table, ious, "gt_known") == 1.0
    assert objective_value(table, ious, "top1_loc") == 0.5
    paper = score_rule(table, PAPER_RULE)  # the halo box: IoU 400/1024 = 0.39 -> reaches 0.3 only
    assert objective_value(table, paper, "iou_mean3") == pytest.approx(1 / 3)


def test_split_indices():
    assert split_indices(7, "0/2").tolist() == [0, 2, 4, 6] and split_indices(7, "odd").tolist() == [1, 3, 5]
    assert split_indices(7, (2, 3)).tolist() == [2, 5]
    for bad in ("2/2", "1", "a/b", "0/1"):
        with pytest.raises(CamlocError, match="`subset` must be"):
            split_indices(5, bad)


def _calibration() -> Calibration:
    table = table_from_maps(*_per_image_set(12))
    rule, _, records = choose_rule(table)
    return Calibration(
        rule=rule,
        method="cam",
        protocol="paper",
        model="tiny",
        objective="gt_known",
        score=1.0,
        cv_score=0.9,
        n_images=12,
        data={"path": "x.csv", "fingerprint": "abc"},
        image_keys=("b", "a"),
        candidates=tuple(records),
        baseline={"gt_known_loc": 0.1},
    )


def test_calib_json_round_trip(tmp_path: Path):
    calib = _calibration()
    path = tmp_path / "sub" / "calib.json"
    calib.save(path)
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 1 and doc["command"] == "calibrate" and doc["image_keys"] == ["a", "b"]
    assert doc["rule"]["threshold_mode"] == calib.rule.threshold_mode and doc["fingerprint"] == calib.fingerprint
    back = load_calibration(path)
    assert (
        back == calib
        and back.rule.box(np.eye(5, dtype=np.float32)).tolist() == calib.rule.box(np.eye(5, dtype=np.float32)).tolist()
    )
    assert back.overlap(["a", "c"]) == 1
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["calib.json"]  # no temp file left


def test_bad_calibration_files_raise_camloc_errors(tmp_path: Path):
    with pytest.raises(CamlocError, match=r"readable calib\.json"):
        load_calibration(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CamlocError, match="invalid JSON"):
        load_calibration(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"schema_version": 1, "command": "evaluate"}))
    with pytest.raises(CamlocError, match="a camloc calibrate file"):
        load_calibration(tmp_path / "other.json")
    doc = _calibration().to_dict()
    doc["rule"]["rule"] = "biggest"
    (tmp_path / "rule.json").write_text(json.dumps(doc))
    with pytest.raises(CamlocError, match="`rule` must be one of"):
        load_calibration(tmp_path / "rule.json")
    with pytest.raises(CamlocError, match="`method` must be the calibration's method 'cam'"):
        rule_of(_calibration(), method="backprop")
    assert rule_of(_calibration().rule, method="backprop") == _calibration().rule  # a bare rule: no check
    table = table_from_maps(*_ring_set())
    with pytest.raises(CamlocError, match=r"`rule\.threshold` must be a threshold on the calibration grid"):
        score_rule(table, BoxRule(threshold=0.205))
    with pytest.raises(CamlocError, match="`folds` must be <= the number of images"):
        holdout(table.subset([0]), folds=2)
    with pytest.raises(CamlocError, match="`objective` must be one of"):
        choose_rule(table, objective="accuracy")


# ----------------------------------------------------------------------------------------------------------
# through evaluate and the CLI, with a model whose class-0 map is the image's brightness


INFO = ModelInfo("bright", ("bright", "dark"), Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3))


def _data(tmp: Path, n: int = 6) -> tuple[Path, list[Sample]]:
    """Images 64x64: a white square (the GT box) inside a grey halo (normalised map 0.55) on black: the paper's
    0.2 boxes the halo (IoU 0.25), thresholds above 0.55 box the square."""
    rows, samples = ["file,class_idx,x0,y0,x1,y1"], []
    for i in range(n):
        a = np.zeros((64, 64, 3), np.uint8)
        o = 4 * (i % 3)
        a[4 + o : 52 + o, 4:52] = 140
        box = (16, 16 + o, 40, 40 + o)
        a[box[1] : box[3], box[0] : box[2]] = 255
        Image.fromarray(a).save(tmp / f"im{i}.png")
        rows.append(f"im{i}.png,0,{box[0]},{box[1]},{box[2]},{box[3]}")
        samples.append(Sample(f"im{i}", tmp / f"im{i}.png", 0, np.array([box], np.float32)))
    csv = tmp / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv, samples


def test_table_from_evaluate_matches_evaluate_and_calibration_applies(tmp_path: Path):
    _, samples = _data(tmp_path)
    model = BrightSpot().eval()
    table, res = collect_table(samples, model, INFO, workers=0)
    per = res.per_image
    # the paper rule's column of the table is evaluate's per-image GT-known IoU
    assert np.allclose(score_rule(table, PAPER_RULE), [r["iou_gt_known"] for r in per], atol=1e-4)
    assert res.metrics["gt_known_loc"] == 0.0
    calib, res2 = calibrate_samples(samples, model, INFO, workers=0, holdout_folds=2, threshold_modes=("fixed",))
    assert calib.n_images == 6 and calib.score == 1.0 and 0.55 < calib.rule.threshold <= 1.0
    assert calib.holdout["auto"]["gt_known_loc"] == 1.0 and calib.holdout["paper"]["gt_known_loc"] == 0.0
    assert calib.baseline["gt_known_loc"] == 0.0 and res2.metrics == res.metrics
    ev = evaluate_samples(samples, model, INFO, workers=0, calibration=calib)
    assert ev.metrics["gt_known_loc"] == 1.0 and ev.metrics["top1_loc"] == 1.0
    assert ev.metrics["maxboxacc"] == res.metrics["maxboxacc"]  # the sweeps do not change
    # a rule equal to the paper's changes nothing
    same = evaluate_samples(samples, model, INFO, workers=0, calibration=BoxRule(threshold=0.2))
    assert same.metrics == res.metrics and [r["box_gt_known"] for r in same.per_image] == [
        r["box_gt_known"] for r in per
    ]
    with pytest.raises(CamlocError, match="`method` must be the calibration's method"):
        evaluate_samples(samples, model, INFO, workers=0, method="backprop", calibration=calib)


@pytest.fixture
def bright_cli(monkeypatch):
    monkeypatch.setattr("camloc.cli.load_model_from_args", lambda args: (BrightSpot().eval(), INFO))


def test_cli_calibrate_then_evaluate_and_explain_on_the_other_half(tmp_path: Path, capsys, bright_cli):
    from camloc.cli import main

    csv, _ = _data(tmp_path)
    out = tmp_path / "calib_even.json"
    common = ["--quiet", "--workers", "0"]
    code = main(["calibrate", str(csv), "--subset", "0/2", "--out", str(out), "--thresholds", "fixed", *common])
    assert code == 0
    calib = json.loads(out.read_text())
    assert calib["n_images"] == 3 and calib["data"]["subset"] == "0/2" and calib["method"] == "cam"
    assert 0.55 < calib["rule"]["threshold"] <= 1.0 and calib["score"] == 1.0
    ev = tmp_path / "ev"
    code = main(
        ["evaluate", str(csv), "--subset", "1/2", "--calibration", str(out), "--out", str(ev), "--json", *common]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["images"] == 3 and doc["method"] == "cam" and doc["metrics"]["gt_known_loc"] == 1.0
    assert doc["calibration"]["overlap_images"] == 0 and doc["calibration"]["fingerprint"] == calib["fingerprint"]
    assert any("calibrated rule" in n for n in doc["notes"])
    # the same images it was calibrated on: flagged
    code = main(["evaluate", str(csv), "--subset", "0/2", "--calibration", str(out), "--out", str(ev), *common])
    assert code == 0 and "3 of these images were used for calibration" in capsys.readouterr().err
    assert json.loads((ev / "metrics.json").read_text())["calibration"]["overlap_images"] == 3
    # without a calibration: the paper rule, and metrics.json says so
    assert main(["evaluate", str(csv), "--out", str(ev), *common]) == 0
    plain = json.loads((ev / "metrics.json").read_text())
    assert plain["calibration"] is None and plain["metrics"]["gt_known_loc"] == 0.0 and plain["method"] == "cam"
    # explain applies the calibrated rule: the box of the white square (original pixels)
    ex = tmp_path / "ex"
    code = main(["explain", str(tmp_path / "im1.png"), "--calibration", str(out), "--out", str(ex), "--no-images",
                 "--topk", "1", *common])  # fmt: skip
    assert code == 0
    box = json.loads((ex / "results.jsonl").read_text().splitlines()[0])["topk"][0]["box"]
    assert np.allclose(box, [16, 20, 40, 44], atol=2.1)
    manifest = json.loads((ex / "manifest.json").read_text())
    assert manifest["calibration"]["fingerprint"] == calib["fingerprint"] and "largest" in manifest["threshold_rule"]
    # a contradicting --method is an error
    code = main(["evaluate", str(csv), "--calibration", str(out), "--method", "backprop", "--out", str(ev), *common])
    assert code == 2 and "contradicts the calibration's method 'cam'" in capsys.readouterr().err


def test_cli_calibrate_holdout_reports_held_out_numbers(tmp_path: Path, capsys, bright_cli):
    from camloc.cli import main

    csv, _ = _data(tmp_path)
    out = tmp_path / "c.json"
    code = main(["calibrate", str(csv), "--holdout", "2", "--rules", "largest,mass", "--out", str(out), "--json",
                 "--workers", "0"])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc == json.loads(out.read_text())
    ho = doc["holdout"]
    assert ho["folds"] == 2 and ho["auto"]["gt_known_loc"] == 1.0 and ho["paper"]["gt_known_loc"] == 0.0
    assert {c["name"] for c in ho["candidates"]} == {f"{r}/{m}" for r in ("largest", "mass") for m in
                                                     ("fixed", "otsu", "model")}  # fmt: skip
    assert "held out" in captured.err and "paper (largest/0.2)" in captured.err
    assert set(ho["oracle"]) == {"largest", "mass"} and ho["oracle"]["largest"] == 1.0
    # the wsolevaluation preset: rules on the min-max normalised map, its IoU convention
    code = main(["calibrate", str(csv), "--protocol", "wsolevaluation", "--thresholds", "fixed", "--out", str(out),
                 "--quiet", "--workers", "0"])  # fmt: skip
    doc = json.loads(out.read_text())
    assert code == 0 and doc["protocol"] == "wsolevaluation" and doc["rule"]["normalize"] == "minmax"
    assert doc["score"] == 1.0


def test_cli_calibrate_bad_options(tmp_path: Path, capsys, bright_cli):
    from camloc.cli import main

    csv, _ = _data(tmp_path, n=2)
    for extra, message in [
        (["--rules", "largest,biggest"], "`--rules` must be a comma-separated list"),
        (["--thresholds", ""], "`--thresholds` must be a comma-separated list"),
        (["--holdout", "1"], "`--holdout` must be >= 2"),
        (["--subset", "3/2"], "`subset` must be"),
        (["--method-arg", "novalue"], "`--method-arg` must be KEY=VALUE"),
        (["--limit", "0"], "`--limit` must be >= 1"),
        (["--holdout", "3"], "`folds` must be <= the number of images (2)"),
    ]:
        code = main(["calibrate", str(csv), "--out", str(tmp_path / "c.json"), "--quiet", "--workers", "0", *extra])
        assert code == 2 and message in capsys.readouterr().err, extra
    assert not (tmp_path / "c.json").exists()
    code = main(["evaluate", str(csv), "--calibration", str(tmp_path / "none.json"), "--quiet"])
    assert code == 2 and "readable calib.json" in capsys.readouterr().err
