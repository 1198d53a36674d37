"""``camloc explain --engine ray`` / :mod:`camloc.ray` on a 2-CPU local Ray cluster: the single-process results,
in input order; Parquet of the same rows; Parquet sources of bytes; resume across engines; the missing extra."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camloc.cli import main
from camloc.ray import RayNotInstalledError, _ray

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")  # Ray's own, about its own options


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _same_rows(a: list[dict], b: list[dict]) -> None:
    """Equal rows in the same order; probabilities to the 6th decimal they are rounded to (a different batch
    composition may move the last bit of a float32 forward)."""
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for x, y in zip(a, b):
        px = [t.pop("prob") for t in x["topk"]]
        py = [t.pop("prob") for t in y["topk"]]
        assert x == y
        np.testing.assert_allclose(px, py, atol=1.01e-6)


def test_missing_ray_names_the_extra(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(RayNotInstalledError, match=r"pip install camloc\[ray\]"):
        _ray()
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["explain", str(tmp_path), "--engine", "ray", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "pip install camloc[ray]" in capsys.readouterr().err


def test_import_camloc_does_not_import_ray() -> None:
    import subprocess

    code = "import camloc, camloc.ray, camloc.cli, sys; camloc.cli.build_parser(); print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from camloc.checkpoint import Architecture, save_checkpoint
    from camloc.models.paper import build_gap_network

    torch.manual_seed(0)
    model, info = build_gap_network("tiny_gap", 3, categories=["a", "b", "c"])
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, architecture=Architecture("gap_network", info.extra["build"]),
                    state_dict=model.eval().state_dict(), info=info)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("rayimgs") / "images"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(10):
        h, w = 40 + 7 * i, 90 - 3 * i
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(d / ("sub" if i % 3 else "") / f"{i}.png")
    (d / "bad.jpg").write_text("not an image")
    return d


def _explain(folder: Path, ckpt: Path, out: Path, *extra: str) -> int:
    return main(["explain", str(folder), "--checkpoint", str(ckpt), "--out", str(out), "--quiet", "--topk", "2",
                 "--batch-size", "3", "--max-side", "64", *extra])  # fmt: skip


@pytest.mark.slow
def test_ray_engine_matches_the_single_process_run(cluster, folder, tiny_ckpt, tmp_path) -> None:
    import pyarrow.parquet as pq

    local, dist = tmp_path / "local", tmp_path / "ray"
    assert _explain(folder, tiny_ckpt, local) == 1  # bad.jpg fails in both
    assert _explain(folder, tiny_ckpt, dist, "--engine", "ray", "--actors", "2") == 1
    a, b = _records(local / "results.jsonl"), _records(dist / "results.jsonl")
    assert len(a) == 10 and all(r["topk"][0]["box"] != [0.0, 0.0, 0.0, 0.0] for r in a)
    table = pq.read_table(dist / "results.parquet").to_pylist()
    assert table == b  # the Parquet holds the same rows (same fields, same order)
    for r in a:  # overlays drawn by the actors, named as the single-process run names them
        assert (dist / r["overlay"]).is_file() and (dist / r["panel"]).is_file()
    _same_rows(a, b)
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (local, dist))
    assert mb["failures"] == ma["failures"] and mb["images"] == ma["images"] == 10
    assert mb["engine"] == {"name": "ray", "actors": 2, "gpus_per_actor": 0.0} and mb["options"] == ma["options"]


@pytest.mark.slow
def test_explain_dataset_over_parquet_bytes(cluster, folder, tiny_ckpt, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from camloc.data.images import find_images
    from camloc.ray import ModelSpec, explain_dataset, image_dataset, row_to_record

    files = find_images([folder])
    pq.write_table(pa.table({"path": [str(f) for f in files], "bytes": [f.read_bytes() for f in files]}),
                   tmp_path / "images.parquet")  # fmt: skip
    ds = image_dataset(tmp_path / "images.parquet")
    from camloc.ray import _source

    resumed = _source([tmp_path / "images.parquet"], "path", "bytes").dataset({str(files[0]), str(files[2])})
    assert [r["path"] for r in resumed.select_columns(["path"]).take_all()] == [str(f) for f in files[1:2] + files[3:]]
    rows = explain_dataset(ds, ModelSpec(checkpoint=str(tiny_ckpt)), topk=2, batch_size=4, actors=1, max_side=64)
    got = [r for b in rows.iter_batches(batch_format="pyarrow", batch_size=None) for r in b.to_pylist()]
    assert [r["path"] for r in got] == [str(f) for f in files]  # input order
    errors = {r["path"]: r["error"] for r in got if r["error"]}
    assert list(errors) == [str(folder / "bad.jpg")] and "not an image" in errors[str(folder / "bad.jpg")]
    local = tmp_path / "local"
    assert _explain(folder, tiny_ckpt, local, "--no-images") == 1
    _same_rows(_records(local / "results.jsonl"), [row_to_record(r) for r in got if not r["error"]])


@pytest.mark.slow
def test_ray_run_interrupted_then_resumed(cluster, folder, tiny_ckpt, tmp_path, monkeypatch) -> None:
    import camloc.ray as cr

    ref, out = tmp_path / "ref", tmp_path / "out"
    assert _explain(folder, tiny_ckpt, ref, "--no-images") == 1
    real, seen = cr.row_to_record, []

    def stop_after_four(row):
        if len(seen) == 4:
            raise KeyboardInterrupt  # as SIGINT would, in the driver, between rows
        seen.append(row["path"])
        return real(row)

    monkeypatch.setattr(cr, "row_to_record", stop_after_four)
    assert _explain(folder, tiny_ckpt, out, "--no-images", "--engine", "ray") == 130
    assert len((out / "results.jsonl.partial").read_text().splitlines()) == 4
    monkeypatch.setattr(cr, "row_to_record", real)
    assert _explain(folder, tiny_ckpt, out, "--no-images", "--engine", "ray", "--actors", "2", "--resume") == 1
    _same_rows(_records(ref / "results.jsonl"), _records(out / "results.jsonl"))
    assert (
        json.loads((out / "manifest.json").read_text())["failures"]
        == json.loads((ref / "manifest.json").read_text())["failures"]
    )
