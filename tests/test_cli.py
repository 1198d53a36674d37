"""CLI through ``main([...])``: explain outputs, JSON lines, bad files skipped, exit codes, models listing."""

from __future__ import annotations

import json
import platform
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import camloc
from camloc.cli import main
from camloc.data.images import find_images
from camloc.errors import CamlocValueError
from camloc.explain import ImageFailure, _keep_freed_memory, explain_images
from camloc.models.registry import ModelInfo, Preprocess

ASSETS = Path(camloc.__file__).parent / "assets"


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    Image.open(ASSETS / "coffee.jpg").save(d / "coffee.jpg")
    # grayscale + RGBA + 16-bit copies of the cat, in a sub-folder
    cat = Image.open(ASSETS / "cat.jpg")
    cat.convert("L").save(d / "sub" / "cat_gray.png")
    cat.convert("RGBA").save(d / "sub" / "cat_rgba.png")
    arr16 = (np.asarray(cat.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(arr16).save(d / "sub" / "cat16.png")
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.jpg").write_text("not an image")
    (d / "cut.jpg").write_bytes((ASSETS / "cat.jpg").read_bytes()[:3000])
    return d


def test_explain_writes_results_and_skips_bad_files(photo_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    code = main(
        ["explain", str(photo_dir), "--out", str(out), "--json", "--quiet", "--batch-size", "2", "--workers", "0"]
    )
    assert code == 1, "bad files make the exit code non-zero"
    captured = capsys.readouterr()
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert len(lines) == 4
    for name in ("empty.jpg", "notes.jpg", "cut.jpg"):
        assert name in captured.err
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert results == lines
    by_name = {Path(r["path"]).name: r for r in results}
    coffee = by_name["coffee.jpg"]
    assert (coffee["width"], coffee["height"]) == (600, 400)
    assert coffee["topk"][0]["name"] == "espresso" and len(coffee["topk"]) == 5
    x0, y0, x1, y1 = coffee["topk"][0]["box"]
    assert 0 <= x0 < x1 <= 600 and 0 <= y0 < y1 <= 400
    assert sum(t["prob"] for t in coffee["topk"]) <= 1.0 + 1e-6
    for r in results:
        assert (out / r["overlay"]).is_file() and (out / r["panel"]).is_file()
        ow, oh = _size(out / r["overlay"])  # reduced to --max-side 512 (default), aspect kept
        assert max(ow, oh) == min(512, max(r["width"], r["height"]))
        assert abs(ow / oh - r["width"] / r["height"]) < 0.01
    # the grayscale, RGBA and 16-bit versions of the cat all see a cat
    cats = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat", "lynx"}
    for n in ("cat_gray.png", "cat_rgba.png", "cat16.png"):
        assert by_name[n]["topk"][0]["name"] in cats, (n, by_name[n]["topk"][0])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["images"] == 4 and manifest["failed"] == 3
    assert {Path(f["path"]).name for f in manifest["failures"]} == {"empty.jpg", "notes.jpg", "cut.jpg"}
    assert not list(out.rglob("*.tmp")), "no temporary files left behind"


def test_explain_large_photo_bounded_and_boxes_in_original_pixels(tmp_path: Path):
    big = Image.open(ASSETS / "coffee.jpg").resize((6000, 4000), Image.BILINEAR)
    big.save(tmp_path / "big.jpg", quality=85)
    out = tmp_path / "o"
    assert main(["explain", str(tmp_path / "big.jpg"), "--out", str(out), "--quiet", "--topk", "1"]) == 0
    r = json.loads((out / "results.jsonl").read_text())
    assert (r["width"], r["height"]) == (6000, 4000) and r["topk"][0]["name"] == "espresso"
    x0, _, x1, y1 = r["topk"][0]["box"]
    assert x1 - x0 > 3000 and x1 <= 6000 and y1 <= 4000  # scaled to original pixels (10x the 600x400 photo)
    assert max(_size(out / r["overlay"])) == 512


def _explained(photo_dir: Path, model: torch.nn.Module, info: ModelInfo, **kw: object) -> list[dict]:
    files = find_images([photo_dir])
    return [
        it.to_dict() if isinstance(it, ImageFailure) else it.result.to_dict()
        for it in explain_images(files, model, info, topk=2, batch_size=2, **kw)
    ]


def test_explain_images_threads_processes_and_serial_agree(photo_dir: Path, tiny_model) -> None:
    """Decoding in threads (default), in the calling thread and in a worker process gives the same, in order."""
    info = ModelInfo("tiny", tuple("abcde"), Preprocess(size=(32, 32)))
    threads = _explained(photo_dir, tiny_model, info)
    assert threads == _explained(photo_dir, tiny_model, info, workers=0)
    assert threads == _explained(photo_dir, tiny_model, info, workers=1)
    assert [Path(r["path"]).name for r in threads] == [p.name for p in find_images([photo_dir])]
    failed = {Path(r["path"]).name for r in threads if "error" in r}
    assert failed == {"empty.jpg", "notes.jpg", "cut.jpg"}
    # a consumer that stops early leaves no decoding thread behind
    before = {t.name for t in threading.enumerate()}
    gen = explain_images(find_images([photo_dir]), tiny_model, info, topk=1, batch_size=1)
    next(gen)
    gen.close()
    assert not {t.name for t in threading.enumerate()} - before
    with pytest.raises(CamlocValueError, match="`workers` must be >= 0"):
        next(explain_images(find_images([photo_dir]), tiny_model, info, workers=-1))


def test_keep_freed_memory_only_on_glibc() -> None:
    # raises malloc's mmap/trim thresholds for the CLI process; a no-op (False) where the C library is not glibc
    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert _keep_freed_memory() is expected


def test_explain_cli_matches_the_library_on_the_plain_model(tmp_path: Path) -> None:
    """The CLI's speed settings (channels_last, malloc) leave classes and boxes as the library computes them."""
    for name in ("coffee.jpg", "cat.jpg"):
        Image.open(ASSETS / name).save(tmp_path / name)
    out = tmp_path / "o"
    assert main(["explain", str(tmp_path), "--out", str(out), "--quiet", "--no-images"]) == 0
    cli = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    model, info = camloc.create_model("lite0")
    lib = [it.result.to_dict() for it in explain_images(find_images([tmp_path]), model.eval(), info)]
    assert [r["path"] for r in cli] == [r["path"] for r in lib]
    for a, b in zip(cli, lib):
        assert [t["class_idx"] for t in a["topk"]] == [t["class_idx"] for t in b["topk"]]
        np.testing.assert_allclose([t["prob"] for t in a["topk"]], [t["prob"] for t in b["topk"]], atol=1e-4)
        np.testing.assert_allclose([t["box"] for t in a["topk"]], [t["box"] for t in b["topk"]], atol=0.02)
    assert not (out / "overlays").exists() and not (out / "panels").exists()


def test_explain_usage_errors(tmp_path: Path, capsys):
    assert main(["explain", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "missing" in capsys.readouterr().err
    (tmp_path / "a.jpg").write_bytes((ASSETS / "cat.jpg").read_bytes())
    assert main(["explain", str(tmp_path / "a.jpg"), "--topk", "0"]) == 2
    assert "`--topk`" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "a.jpg"), "--threshold", "2"]) == 2
    assert main(["explain", str(tmp_path / "a.jpg"), "--model", "nope", "--quiet"]) == 2
    assert "`model`" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "a.jpg"), "--model", "torchvision:vgg11", "--quiet"]) == 2
    assert "vgg16_gap" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2


def test_models_listing(capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "lite0" in text and "lite2" in text and "timm:NAME" in text
    assert main(["models", "--json"]) == 0
    names = {m["name"] for m in json.loads(capsys.readouterr().out)}
    assert {"lite0", "lite1", "lite2"} <= names


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def test_synthetic_train_then_explain_and_evaluate_with_checkpoint(tmp_path: Path, capsys):
    data, run = tmp_path / "syn", tmp_path / "run"
    assert main(["synthetic", str(data), "--classes", "2", "--train-per-class", "8", "--val-per-class", "3"]) == 0
    assert (data / "train" / "labels.csv").is_file() and (data / "val" / "labels.csv").is_file()
    argv = ["train", str(data), "--arch", "tiny_gap", "--epochs", "1", "--batch-size", "8", "--out", str(run)]
    assert main([*argv, "--workers", "0"]) == 0
    ckpt = run / "best.pt"
    out = tmp_path / "ex"
    assert (
        main(
            [
                "explain",
                str(data / "val" / "images"),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(out),
                "--quiet",
                "--topk",
                "2",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(len(r["topk"]) == 2 for r in rows)
    names = (data / "classes.txt").read_text().split()
    assert {t["name"] for r in rows for t in r["topk"]} <= set(names)
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                str(data / "val" / "labels.csv"),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "ev"),
                "--quiet",
                "--json",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["images"] == 6 and "pxap" in doc["metrics"]  # the synthetic set carries masks


def _run_python(code: str) -> str:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(camloc.__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return proc.stdout


_IMPORTS = (
    "import sys, contextlib, io\n"
    "from camloc.cli import main\n"
    "buf = io.StringIO()\n"
    "with contextlib.redirect_stdout(buf):\n"
    "    code = main({argv!r})\n"
    "mods = [m for m in ('camloc.train', 'camloc.training', 'torch.distributed', 'torch') if m in sys.modules]\n"
    "print(code, ','.join(mods))\n"
    "print(buf.getvalue())\n"
)


def test_help_lists_every_command_without_importing_torch_or_the_trainer() -> None:
    from camloc.cli import COMMANDS

    out = _run_python(_IMPORTS.format(argv=["--help"]))
    status, _, help_text = out.partition("\n")
    assert status == "0 "  # exit 0; none of camloc.train(ing), torch.distributed, torch imported
    for name, _, help_line in COMMANDS:
        assert name in help_text and help_line[:30] in help_text
    assert [c[0] for c in COMMANDS][:5] == ["explain", "models", "synthetic", "evaluate", "train"]
    assert "--debug" in help_text


def test_models_command_does_not_import_the_trainer() -> None:
    status = _run_python(_IMPORTS.format(argv=["models"])).partition("\n")[0]
    code, _, mods = status.partition(" ")
    assert code == "0"
    assert "camloc.train" not in mods.split(",") and "camloc.training" not in mods.split(",")


def test_camloc_errors_are_one_line_and_exit_2(monkeypatch, capsys) -> None:
    from camloc import cli
    from camloc.errors import CamlocValueError

    def user_error(args):
        raise CamlocValueError("`x` must be fine; got bad")

    monkeypatch.setattr(cli, "cmd_models", user_error)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err == "camloc: error: `x` must be fine; got bad\n"  # no traceback
    assert main(["--debug", "models"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in user_error" in err
    assert err.endswith("camloc: error: `x` must be fine; got bad\n")


@pytest.mark.parametrize("exc", [ValueError, TypeError, KeyError])
def test_other_exceptions_are_bugs_and_propagate(monkeypatch, exc) -> None:
    # before: every ValueError/TypeError, real bugs included, became "exit 2" without a trace
    from camloc import cli

    def bug(args):
        raise exc("a bug in camloc")

    monkeypatch.setattr(cli, "cmd_models", bug)
    with pytest.raises(exc, match="a bug in camloc"):
        main(["models"])
