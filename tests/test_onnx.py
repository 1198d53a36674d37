"""ONNX export (``camloc export``, :func:`camloc.export.export_onnx`) and ``explain --onnx`` (:class:`OnnxCAM`).

Tolerances were measured here (onnxruntime 1.32 CPU vs torch 2.14 CPU, float32, random N(0, 1) inputs): largest
absolute errors lite0 (ImageNet weights, 224 px) logits 4.4e-6, maps 1.6e-5 (maps up to ~14); torchvision
resnet18 (random weights) logits 2.9e-6, maps 9.5e-6; timm convnext_atto (NormPoolHead, random weights) logits
1.2e-6, maps 8.1e-6; squeezenet1_1 (ReluConvHead) maps 1.3e-6. The tests assert 1e-4 (logits and maps) and
1e-5 (softmax scores).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import camloc
from camloc.errors import CamlocError, CamlocValueError, UnsupportedModelError
from camloc.export.onnx import METADATA_KEY, OUTPUTS, OnnxCAM, export_onnx, read_onnx_metadata
from camloc.models.registry import ModelInfo

ASSETS = Path(camloc.__file__).parent / "assets"
TOL = {"logits": 1e-4, "scores": 1e-5, "maps": 1e-4}


def _small(info: ModelInfo, size: int) -> ModelInfo:
    return ModelInfo(info.name, info.categories, info.preprocess.replace(size=(size, size)), info.description)


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, ModelInfo, Path]:
    model, info = camloc.create_model("lite0")
    path = tmp_path_factory.mktemp("onnx") / "lite0.onnx"
    res = export_onnx(model, info, path, topk=5)
    assert res.path == path and res.topk == 5 and res.input_size == (224, 224) and res.map_size == (7, 7)
    assert set(res.max_abs_error) == {"logits", "scores", "maps"}
    return model, info, path


def _compare(producer: OnnxCAM, model: torch.nn.Module, x: torch.Tensor, k: int) -> dict[str, float]:
    ours = producer(x, topk=k)
    ref = camloc.CAM(model)(x, topk=k)
    assert torch.equal(ours.classes, ref.classes)
    assert ours.classes.dtype == torch.int64 and ours.input_size == ref.input_size
    errs = {}
    for name in ("logits", "scores", "maps"):
        a, b = getattr(ours, name), getattr(ref, name)
        assert a.shape == b.shape, name
        errs[name] = float((a.double() - b.double()).abs().max())
        assert errs[name] < TOL[name], (name, errs[name])
    return errs


def test_lite0_onnxruntime_equals_pytorch_with_a_dynamic_batch(lite0) -> None:
    model, _, path = lite0
    producer = OnnxCAM(path)
    g = torch.Generator().manual_seed(3)
    for n in (1, 3):  # the graph was traced at batch 2
        x = torch.randn(n, 3, 224, 224, generator=g)
        _compare(producer, model, x, 5)
    # fewer classes than the graph's K: its first k (the graph's order is the top-k order)
    out = producer(x, topk=2)
    assert out.classes.shape == (3, 2) and out.maps.shape == (3, 2, 7, 7)
    with pytest.raises(CamlocValueError, match=r"`topk` must be <= 5"):
        producer(x, topk=6)
    with pytest.raises(CamlocValueError, match=r"`classes` must be None"):
        producer(x, classes=[1, 2])
    with pytest.raises(CamlocValueError, match=r"`x` must be of shape \[N, 3, 224, 224\]"):
        producer(torch.zeros(1, 3, 100, 100))


def test_metadata_carries_what_explain_needs(lite0) -> None:
    _, info, path = lite0
    meta = read_onnx_metadata(path)
    assert meta == OnnxCAM(path).metadata
    assert meta["schema_version"] == 1 and meta["camloc_version"] == camloc.__version__ and meta["topk"] == 5
    assert meta["input_size"] == [224, 224] and meta["map_size"] is None and meta["feature_size"] == [7, 7]
    assert ModelInfo.from_dict(meta["model"]) == info  # class names and preprocessing round-trip exactly
    import onnx

    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == list(OUTPUTS) and [i.name for i in proto.graph.input] == ["input"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert any(p.key == METADATA_KEY for p in proto.metadata_props)
    assert any(n.op_type == "TopK" for n in proto.graph.node) and any(n.op_type == "Gather" for n in proto.graph.node)


@pytest.mark.parametrize(
    ("spec", "kind"),
    [("torchvision:resnet18", "LinearHead"), ("timm:convnext_atto", "NormPoolHead")],
)
def test_zoo_models_with_random_weights(spec: str, kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, info = camloc.create_model(spec)
    info = _small(info, 64)
    assert type(camloc.CAM(model).head).__name__ == kind
    res = export_onnx(model, info, tmp_path / "m.onnx", topk=3)
    assert res.map_size == (2, 2)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    _compare(OnnxCAM(tmp_path / "m.onnx"), model, x, 3)


def test_upsampled_maps_equal_camloc_upsampling_and_modes_are_restored(tmp_path: Path) -> None:
    from camloc.models.registry import Preprocess
    from conftest import TinyGap

    torch.manual_seed(0)
    model = TinyGap(num_classes=4)
    info = ModelInfo("tiny", tuple("abcd"), Preprocess(size=(64, 64)))
    model.train()
    model.trunk[0].eval()  # a mixed state, to be restored exactly
    flags = [m.training for m in model.modules()]
    res = export_onnx(model, info, tmp_path / "up.onnx", topk=2, upsample=(20, 24))
    assert [m.training for m in model.modules()] == flags
    assert res.map_size == (20, 24)
    model.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours = OnnxCAM(tmp_path / "up.onnx")(x, topk=2)
    ref = camloc.CAM(model)(x, topk=2)
    assert ours.maps.shape == (2, 2, 20, 24)
    assert float((ours.maps - ref.upsampled((20, 24))).abs().max()) < TOL["maps"]
    export_onnx(model, info, tmp_path / "full.onnx", topk=1, upsample=True)
    assert OnnxCAM(tmp_path / "full.onnx")(x, topk=1).maps.shape == (2, 1, 64, 64)
    assert read_onnx_metadata(tmp_path / "full.onnx")["map_size"] == [64, 64]


def _photos(tmp: Path) -> Path:
    from PIL import Image

    d = tmp / "photos"
    d.mkdir()
    for name in ("cat.jpg", "coffee.jpg"):
        (d / name).write_bytes((ASSETS / name).read_bytes())
    g = np.random.default_rng(0)
    Image.fromarray(g.integers(0, 256, (90, 130, 3), dtype=np.uint8)).save(d / "noise.png")
    (d / "broken.jpg").write_bytes(b"not a jpeg")
    return d


def test_explain_with_onnx_equals_the_torch_path(lite0, tmp_path: Path, capsys) -> None:
    """Same classes; boxes equal to 0.01 px here (the maps differ by ~1e-5, below any threshold crossing); the
    test allows one pixel. Probabilities agree to 1e-5."""
    from camloc.cli import main

    _, _, path = lite0
    photos = _photos(tmp_path)
    rows = {}
    for tag, extra in (("torch", []), ("onnx", ["--onnx", str(path), "--threads", "1"])):
        out = tmp_path / tag
        argv = ["explain", str(photos), "--out", str(out), "--quiet", "--workers", "0", "--topk", "3", *extra]
        assert main(argv) == 1  # broken.jpg is skipped in both
        rows[tag] = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["images"] == 3 and manifest["failed"] == 1
        assert (out / "overlays" / "cat.png").is_file() and (out / "panels" / "coffee.png").is_file()
    assert manifest["onnx"] == str(path)
    capsys.readouterr()
    assert len(rows["torch"]) == len(rows["onnx"]) == 3
    for a, b in zip(rows["torch"], rows["onnx"]):
        assert set(a) == set(b) and (a["path"], a["width"], a["height"]) == (b["path"], b["width"], b["height"])
        assert [t["class_idx"] for t in a["topk"]] == [t["class_idx"] for t in b["topk"]]
        assert [t["name"] for t in a["topk"]] == [t["name"] for t in b["topk"]]
        assert np.abs(np.array([t["prob"] for t in a["topk"]]) - [t["prob"] for t in b["topk"]]).max() <= 1e-5
        assert np.abs(np.array([t["box"] for t in a["topk"]]) - [t["box"] for t in b["topk"]]).max() <= 1.0


def test_explain_images_takes_a_producer_instead_of_a_model(lite0, tmp_path: Path) -> None:
    from camloc.explain import Explained, explain_images

    model, info, path = lite0
    photos = sorted(p for p in _photos(tmp_path).iterdir() if p.name != "broken.jpg")
    producer = OnnxCAM(path)
    ours = list(explain_images(photos, None, producer.info, topk=2, workers=0, producer=producer))
    ref = list(explain_images(photos, model, info, topk=2, workers=0))
    assert all(isinstance(e, Explained) for e in ours + ref)
    for a, b in zip(ours, ref):
        assert [c.class_idx for c in a.result.topk] == [c.class_idx for c in b.result.topk]  # type: ignore[union-attr]
        assert np.abs(a.maps - b.maps).max() < 1e-4  # type: ignore[union-attr]
    with pytest.raises(CamlocValueError, match=r"`model` must be a torch model, or None together with a `producer`"):
        list(explain_images(photos, None, info, workers=0))


def test_export_cli_and_its_errors(tmp_path: Path, capsys) -> None:
    from camloc.cli import main

    out = tmp_path / "sq.onnx"
    code = main(["export", "--model", "torchvision:squeezenet1_1", "--topk", "2", "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["topk"] == 2 and summary["map_size"] == [13, 13] and summary["path"] == str(out)
    assert summary["max_abs_error"]["maps"] < TOL["maps"]
    assert OnnxCAM(out).info.name == "torchvision:squeezenet1_1"
    # --topk above the graph's K
    assert main(["explain", str(ASSETS / "cat.jpg"), "--onnx", str(out), "--out", str(tmp_path / "e")]) == 2
    assert "`--topk` must be <= 2" in capsys.readouterr().err
    argv = ["explain", str(ASSETS / "cat.jpg"), "--onnx", str(out), "--topk", "2", "--weights", str(out)]
    assert main(argv) == 2
    assert "`--weights` must not be given with `--onnx`" in capsys.readouterr().err
    # models without an exact CAM are refused before anything is written
    assert main(["export", "--model", "torchvision:mobilenet_v3_small", "--out", str(tmp_path / "v.onnx")]) == 2
    assert "not supported" in capsys.readouterr().err and not (tmp_path / "v.onnx").exists()
    assert main(["export", "--model", "lite0", "--upsample", "12xq", "--out", str(tmp_path / "u.onnx")]) == 2
    assert "`--upsample` must be HxW" in capsys.readouterr().err


def test_bad_files_are_camloc_errors(tmp_path: Path) -> None:
    with pytest.raises(CamlocValueError, match=r"`onnx` must be an existing \.onnx file"):
        OnnxCAM(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 this is not protobuf" * 10)
    with pytest.raises(CamlocValueError, match=r"`onnx` must be an ONNX model file"):
        OnnxCAM(junk)
    with pytest.raises(CamlocValueError, match=r"`onnx` must be an ONNX model file"):
        read_onnx_metadata(junk)
    plain = tmp_path / "plain.onnx"  # a valid ONNX graph, but not camloc's
    import io
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(torch.nn.Conv2d(3, 2, 1), (torch.zeros(1, 3, 4, 4),), buf, dynamo=False)  # type: ignore[arg-type]
    plain.write_bytes(buf.getvalue())
    with pytest.raises(CamlocValueError, match=r"a graph written by `camloc export`"):
        OnnxCAM(plain)
    with pytest.raises(CamlocValueError, match=r"a graph written by `camloc export`"):
        read_onnx_metadata(plain)


def test_export_argument_errors_and_atomic_write(tmp_path: Path, monkeypatch) -> None:
    from camloc.export import onnx as mod
    from camloc.models.registry import Preprocess
    from conftest import TinyGap

    model = TinyGap(num_classes=5).eval()
    info = ModelInfo("tiny", tuple("abcde"), Preprocess(size=(16, 16)))
    dest = tmp_path / "t.onnx"
    res = export_onnx(model, info, dest, topk=9)
    assert res.topk == 5 and res.map_size == (8, 8)  # K capped at the number of classes
    before = dest.read_bytes()
    with pytest.raises(CamlocValueError, match=r"`topk` must be >= 1"):
        export_onnx(model, info, dest, topk=0)
    with pytest.raises(CamlocValueError, match=r"`upsample` must be False, True"):
        export_onnx(model, info, dest, upsample=(0, 3))  # type: ignore[arg-type]
    with pytest.raises(CamlocValueError, match=r"`info` must be class names for the model's 5 classes"):
        export_onnx(model, ModelInfo("tiny", ("a", "b"), Preprocess(size=(16, 16))), dest)
    with pytest.raises(CamlocValueError, match=r"`model` must be a float32 model"):
        export_onnx(TinyGap().double(), info, dest)
    with pytest.raises(UnsupportedModelError):
        export_onnx(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()), info, dest)

    def disagree(ours, ref, errors):  # a graph that does not match PyTorch is never written
        raise CamlocValueError("differs")

    monkeypatch.setattr(mod, "_compare", disagree)
    with pytest.raises(CamlocValueError, match="differs"):
        export_onnx(model, info, dest, topk=2)
    assert dest.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["t.onnx"]
    export_onnx(model, info, dest, topk=2, check=False)  # unchecked: written, no errors measured
    assert read_onnx_metadata(dest)["topk"] == 2


def test_missing_packages_name_the_extra(monkeypatch) -> None:
    from camloc.export import onnx as mod

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(CamlocError, match=r"pip install camloc\[onnx\]"):
        mod.OnnxCAM("whatever.onnx")


def test_import_camloc_and_camloc_export_load_neither_onnx_nor_torch() -> None:
    code = (
        "import sys, camloc, camloc.export, camloc.export.detections\n"
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
