"""camloc fit: a linear head on a frozen trunk's pooled features, exact as one GAP -> linear head, end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import camloc
from camloc.checkpoint import load_checkpoint, read_checkpoint
from camloc.cli import main
from camloc.errors import CamlocValueError
from camloc.fit import extract_pooled_features, fit_linear_head, fold_standardization
from camloc.pipeline import ImagePipeline

pytest.importorskip("sklearn")

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _image(rng: np.random.Generator, colour: tuple[int, int, int] | None, size: int = 40) -> tuple[np.ndarray, list]:
    """Grey noise with (optionally) one filled square of ``colour``; returns the image and its box (xyxy)."""
    img = rng.integers(90, 160, (size, size, 3)).astype(np.uint8)
    if colour is None:
        return img, []
    s = int(rng.integers(size // 3, size // 2))
    x, y = (int(v) for v in rng.integers(0, size - s, 2))
    img[y : y + s, x : x + s] = colour
    return img, [x, y, x + s, y + s]


def _write_csv_set(root: Path, classes: dict[str, tuple[int, int, int] | None], n: int, seed: int = 0) -> Path:
    """camloc CSV layout: root/classes.txt, root/{train,val}/labels.csv (file,class_idx,x0,y0,x1,y1)."""
    rng = np.random.default_rng(seed)
    names = list(classes)
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    for split, count in (("train", n), ("val", max(2, n // 2))):
        (root / split / "images").mkdir(parents=True)
        rows = ["file,class_idx,x0,y0,x1,y1"]
        for ci, name in enumerate(names):
            for j in range(count):
                img, box = _image(rng, classes[name])
                f = f"images/{name}_{j:03d}.png"
                Image.fromarray(img).save(root / split / f)
                rows.append(f"{f},{ci}," + (",".join(map(str, box)) if box else ",,,"))
        (root / split / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_csv_set(tmp_path_factory.mktemp("fit") / "colours", COLOURS, n=12)


@pytest.fixture(scope="module")
def trunk_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fixed random-init tiny_gap (random init differs per build: a file makes the trunk reproducible)."""
    torch.manual_seed(0)
    model, _ = camloc.create_model("tiny_gap")
    path = tmp_path_factory.mktemp("trunk") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def fitted(colours: Path, trunk_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run") / "run"
    argv = ["fit", str(colours), "--model", "tiny_gap", "--weights", str(trunk_file), "--out", str(run), "--quiet"]
    argv += ["--workers", "0"]
    assert main(argv) == 0
    return run


def test_fit_report_and_checkpoint(fitted: Path, colours: Path) -> None:
    rep = json.loads((fitted / "fit_report.json").read_text())
    assert rep["classes"] == ["red", "green", "blue"] and rep["layout"] == "csv"
    assert rep["train_images"] == 36 and rep["holdout_images"] == 6  # round(12 * 0.2) = 2 per class
    # colour squares are linearly separable even in a random trunk's pooled features: far above chance (1/3)
    assert rep["holdout"]["accuracy"] >= 0.85 and rep["test"]["accuracy"] >= 0.85
    assert np.asarray(rep["test"]["confusion"]).sum() == rep["test"]["images"] == 18
    assert rep["C"] in [g["C"] for g in rep["grid"]] and len(rep["grid"]) == 5
    assert rep["features"]["extracted_images"] == 36 + 18 and rep["features"]["images_per_second"] > 0
    assert (fitted / "fit_report.md").read_text().startswith("# camloc fit: logreg head on tiny_gap")
    ck = read_checkpoint(fitted / "model.pt")
    assert ck.architecture.kind == "fitted_head"
    assert ck.architecture.spec["trunk"]["embedded"] is False  # a weights file: referenced with its sha256
    assert set(ck.state_dict) == {"fc.weight", "fc.bias"}
    assert ck.info.categories == ("red", "green", "blue")
    assert ck.state_dict["fc.weight"].shape == (3, 64)


def test_identity_and_sklearn_logits(colours: Path, tmp_path: Path) -> None:
    res = fit_linear_head(colours, model="tiny_gap", workers=0, Cs=(0.1, 1.0), out=tmp_path / "run")
    ck = read_checkpoint(res.checkpoint)
    assert ck.architecture.spec["trunk"]["embedded"] is True  # random init: only the weights rebuild it
    assert any(k.startswith("trunk.") for k in ck.state_dict)
    again, _ = load_checkpoint(res.checkpoint)
    paths = sorted((colours / "val" / "images").glob("*.png"))[:6]
    pipe = ImagePipeline(res.info.preprocess)
    x = torch.stack([pipe(p).tensor for p in paths])
    with torch.no_grad():
        f = res.model.forward_features(x)
        pooled = f.mean(dim=(2, 3)).double().numpy()
        out = camloc.CAM(res.model)(x, classes=torch.arange(3))
    ref = res.fit.estimator.decision_function(pooled)  # scikit-learn on the pooled features: the classifier fitted
    np.testing.assert_allclose(out.logits.double().numpy(), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(res.model(x).detach().double().numpy(), ref, rtol=1e-4, atol=1e-4)
    # the CAM identity of the one GAP -> linear head: mean_xy M_c + b_c = logit_c
    lhs = out.maps.double().mean(dim=(2, 3)) + res.model.fc.bias.detach().double()
    np.testing.assert_allclose(lhs.numpy(), out.logits.double().numpy(), rtol=1e-5, atol=1e-5)
    # the same head through camloc.CAM's classifier= path (a fitted scikit-learn pipeline is not linear in p; the
    # folded weights are): LinearHead on the trunk
    head = camloc.LinearHead(res.model.fc)
    np.testing.assert_allclose(head.logits(f).detach().double().numpy(), ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # the embedded trunk rebuilds the same network
        np.testing.assert_allclose(again(x).double().numpy(), ref, rtol=1e-4, atol=1e-4)


def test_fold_standardization_hand_computed() -> None:
    # z = (p - m) / s; logit = W z + b  ->  W' = W / s, b' = b - W' m
    w, b = fold_standardization(np.array([[2.0, -1.0], [0.5, 4.0]]), np.array([1.0, -2.0]), [1.0, 2.0], [2.0, 4.0])
    np.testing.assert_allclose(w, [[1.0, -0.25], [0.25, 1.0]])
    np.testing.assert_allclose(b, [1.0 - (1.0 - 0.5), -2.0 - (0.25 + 2.0)])
    w, b = fold_standardization(np.array([[3.0, 3.0]]), np.array([1.0]), [0.0, 1.0], [1.0, 3.0])  # binary
    np.testing.assert_allclose(w, [[0.0, 0.0], [3.0, 1.0]])
    np.testing.assert_allclose(b, [0.0, 0.0])


def test_explain_and_evaluate_read_the_checkpoint(fitted: Path, colours: Path, tmp_path: Path) -> None:
    rep = json.loads((fitted / "fit_report.json").read_text())
    ev = tmp_path / "ev"
    ckpt = str(fitted / "model.pt")
    argv = ["evaluate", str(colours), "--split", "val", "--checkpoint", ckpt, "--out", str(ev), "--quiet"]
    assert main([*argv, "--workers", "0"]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert m["images"] == 18 and m["model"] == "fit:tiny_gap"
    # the same pipeline, trunk and head: evaluate's top-1 is the fit report's test accuracy, exactly
    assert m["metrics"]["top1_cls"] == pytest.approx(rep["test"]["accuracy"], abs=1e-6)
    ex = tmp_path / "ex"
    val = colours / "val" / "images"
    assert main(["explain", str(val), "--checkpoint", ckpt, "--out", str(ex), "--no-images", "--quiet"]) == 0
    recs = [json.loads(line) for line in (ex / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 18
    right = 0
    for r in recs:
        top = r["topk"][0]
        assert len(r["topk"]) == 3 and len(top["box"]) == 4
        x0, y0, x1, y1 = top["box"]
        assert 0 <= x0 < x1 <= 40 and 0 <= y0 < y1 <= 40  # original-pixel boxes inside the 40 x 40 image
        right += top["name"] == Path(r["path"]).name.split("_")[0]
    assert right / 18 == pytest.approx(rep["test"]["accuracy"], abs=1e-6)


def test_refit_reads_the_cache(fitted: Path, colours: Path, trunk_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("the trunk ran again")

    monkeypatch.setattr("camloc.fit.extract_pooled_features", boom)
    kw = {"model": "tiny_gap", "weights": trunk_file, "cache_dir": fitted / "cache"}
    res = fit_linear_head(colours, **kw, classifier="svm", Cs=(0.5,), class_weight="balanced")
    assert res.report["features"]["extracted_images"] == 0 and res.report["features"]["cached_views"] == 2
    assert res.report["classifier"] == "svm" and res.fit.C == 0.5 and res.fit.grid.keys() == {0.5}
    assert res.report["test"]["accuracy"] >= 0.85
    with pytest.raises(AssertionError, match="trunk ran again"):  # another view (flip) is a new cache entry
        fit_linear_head(colours, **kw, flip=True)


def test_flip_view_is_the_mirrored_image(colours: Path, tmp_path: Path) -> None:
    model, info = camloc.create_model("tiny_gap")
    src = sorted((colours / "train" / "images").glob("*.png"))[:3]
    mirrored = []
    for i, p in enumerate(src):
        q = tmp_path / f"m{i}.png"
        Image.open(p).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(q)
        mirrored.append(q)
    a = extract_pooled_features(model, info.preprocess, src, views=("plain", "flip"), workers=0)
    b = extract_pooled_features(model, info.preprocess, mirrored, workers=0)
    assert a["plain"].shape == (3, 64) and a["plain"].dtype == np.float32
    np.testing.assert_allclose(a["flip"], b["plain"], rtol=1e-4, atol=1e-5)
    res = fit_linear_head(colours, model="tiny_gap", workers=0, flip=True, Cs=(1.0,))
    assert res.report["train_samples"] == 2 * 36


def test_binary_gives_the_positive_class_a_map(tmp_path: Path) -> None:
    data = _write_csv_set(tmp_path / "bin", {"empty": None, "red": COLOURS["red"]}, n=10, seed=3)
    res = fit_linear_head(data, model="tiny_gap", workers=0)
    assert res.report["binary_positive_class"] == "red" and res.report["test"]["accuracy"] >= 0.9
    w = res.model.fc.weight.detach()
    assert torch.equal(w[0], torch.zeros_like(w[0])) and float(res.model.fc.bias.detach()[0]) == 0.0
    x = torch.stack([ImagePipeline(res.info.preprocess)(p).tensor for p in sorted((data / "val").rglob("red_*"))])
    out = camloc.CAM(res.model)(x, classes=torch.tensor([0, 1]))
    assert float(out.maps[:, 0].abs().max()) == 0.0 and float(out.maps[:, 1].abs().max()) > 0
    ref = res.fit.estimator.decision_function(res.model.forward_features(x).mean(dim=(2, 3)).detach().double().numpy())
    np.testing.assert_allclose((out.logits[:, 1] - out.logits[:, 0]).double().numpy(), ref, rtol=1e-4, atol=1e-4)


def test_packaged_trunk_is_referenced_not_copied(tmp_path: Path) -> None:
    # a trunk file with its sha256: the checkpoint stays small and notices a changed file
    model, _ = camloc.create_model("tiny_gap")
    wfile = tmp_path / "trunk.pt"
    torch.save(model.state_dict(), wfile)
    data = _write_csv_set(tmp_path / "d", {"red": COLOURS["red"], "blue": COLOURS["blue"]}, n=6)
    res = fit_linear_head(data, model="tiny_gap", weights=wfile, out=tmp_path / "run", workers=0, Cs=(1.0,))
    ck = read_checkpoint(res.checkpoint)
    assert set(ck.state_dict) == {"fc.weight", "fc.bias"} and ck.architecture.spec["trunk"]["embedded"] is False
    again, info = load_checkpoint(res.checkpoint)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), res.model(x))
    assert info.categories == ("red", "blue")
    model.state_dict()["fc.bias"].add_(1.0)
    torch.save(model.state_dict(), wfile)
    with pytest.raises(CamlocValueError, match="changed since the fit"):
        load_checkpoint(res.checkpoint)


def _folder(root: Path, spec: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for name, n in spec.items():
        (root / name).mkdir(parents=True)
        for j in range(n):
            Image.fromarray(_image(rng, COLOURS.get(name, (0, 0, 0)))[0]).save(root / name / f"{j}.png")
    return root


def test_bad_data_is_named(tmp_path: Path) -> None:
    one = _folder(tmp_path / "one", {"red": 4})
    with pytest.raises(CamlocValueError, match="at least 2 classes"):
        fit_linear_head(one, model="tiny_gap")
    empty = _folder(tmp_path / "empty", {"red": 4, "blue": 0})
    with pytest.raises(CamlocValueError, match="no training images for class\\(es\\) blue"):
        fit_linear_head(empty, model="tiny_gap")
    bad = _folder(tmp_path / "bad", {"red": 4, "blue": 4})
    (bad / "blue" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(CamlocValueError, match=r"broken\.png"):
        fit_linear_head(bad, model="tiny_gap", workers=0)
    dup = _folder(tmp_path / "dup", {"red": 4, "blue": 4})
    shutil.copy(dup / "red" / "2.png", dup / "blue" / "copy.png")
    with pytest.raises(CamlocValueError, match=r"2.png \('red'\) and .*copy.png \('blue'\) are the same image"):
        fit_linear_head(dup, model="tiny_gap")
    assert main(["fit", str(tmp_path / "missing"), "--model", "tiny_gap", "--out", str(tmp_path / "o")]) == 2
