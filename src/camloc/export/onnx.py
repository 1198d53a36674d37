"""ONNX export of a CAM graph, and :class:`OnnxCAM`: the same maps from onnxruntime, without a torch forward.

:func:`export_onnx` traces one graph ``input [N, 3, H, W] float32 -> logits, classes, scores, maps``:

- ``logits`` ``[N, C]`` float32: ``head.logits(trunk(x))`` (equal to ``model(x)`` in eval mode);
- ``classes`` ``[N, K]`` int64: each image's top-``K`` classes, best first (``topk`` of the softmax);
- ``scores`` ``[N, K]`` float32: their softmax probabilities;
- ``maps`` ``[N, K, h, w]`` float32: the head's raw maps of those classes (:mod:`camloc.heads`: for a linear head
  ``M_c = sum_k w_ck f_k``, no ReLU, no bias) at feature resolution, or resized bilinearly
  (``align_corners=False``, as :func:`camloc.cam.upsample_maps`) to the input size or a given size.

The batch axis is dynamic (``batch``); ``H, W`` are the model's input size (``info.preprocess.size``). The trunk
and the head are camloc's own (:func:`camloc.resolve.resolve_head`, :class:`camloc.CAM`), checked once against
``model(x)`` before tracing; the top-k and the map of the chosen classes are a ``TopK`` and a ``Gather`` in the
graph. The model travels with what explaining needs, in the ONNX metadata key ``camloc`` (JSON,
:data:`METADATA_KEY`): ``schema_version``, ``camloc_version``, ``model`` (name, class names, preprocessing,
description: :meth:`camloc.models.registry.ModelInfo.to_dict`), ``topk``, ``input_size``, ``map_size`` (null:
feature resolution), ``head``, ``source``, ``opset``. :class:`OnnxCAM` reads it back, so
``camloc explain --onnx model.onnx`` needs neither the torch model nor its weights.

onnx and onnxruntime are imported on first use (``pip install camloc[onnx]``); ``import camloc`` imports
neither. The exporter is torch's TorchScript-based one (``dynamo=False``): the ``torch.export`` exporter refuses
camloc's data-dependent argument checks (class-index range) inside the head.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from camloc import __version__
from camloc._checks import check_number, check_tensor, fail
from camloc.errors import CamlocError, CamlocValueError
from camloc.extractor import CAM, CamResult
from camloc.models.registry import ModelInfo
from camloc.resolve import ResolvedHead

__all__ = ["METADATA_KEY", "OUTPUTS", "OnnxCAM", "OnnxExport", "export_onnx", "read_onnx_metadata"]

METADATA_KEY = "camloc"
"""The ONNX ``metadata_props`` key holding camloc's JSON document (module docstring)."""

OUTPUTS = ("logits", "classes", "scores", "maps")
"""Output names of an exported graph, in order; its one input is ``input``."""

SCHEMA_VERSION = 1
INSTALL_HINT = "pip install camloc[onnx]"
DEFAULT_OPSET = 17


def _require(module: str) -> Any:
    """Import ``onnx`` / ``onnxruntime`` or raise a camloc error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise CamlocError(f"ONNX export and `--onnx` need the package {module} ({INSTALL_HINT}); {e}") from e


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ``.onnx`` file.
        topk: ``K``, the number of classes whose maps the graph computes.
        input_size: ``(H, W)`` of the graph's input.
        map_size: ``(h, w)`` of its ``maps`` output.
        opset: ONNX opset version.
        max_abs_error: per output (``logits``, ``scores``, ``maps``), the largest absolute difference between
            onnxruntime and camloc's PyTorch forward on the check batches (empty when ``check=False``).
    """

    path: Path
    topk: int
    input_size: tuple[int, int]
    map_size: tuple[int, int]
    opset: int
    max_abs_error: dict[str, float] = field(default_factory=dict)


class _CamGraph(nn.Module):
    """``x -> (logits, classes, scores, maps)``: the module :func:`export_onnx` traces (camloc's trunk and head)."""

    def __init__(self, resolved: ResolvedHead, topk: int, size: tuple[int, int] | None) -> None:
        super().__init__()
        self.model = resolved.model  # registered, so the exporter sees (and restores) its mode and parameters
        self.resolved = resolved
        self.topk = topk
        self.size = size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        from camloc.cam import upsample_maps

        feats, _ = self.resolved.run(x)
        logits = self.resolved.head.logits(feats).float()
        scores, classes = logits.softmax(dim=1).topk(self.topk, dim=1)  # as camloc.cam.topk_classes
        maps = self.resolved.head.maps(feats, classes).float()
        if self.size is not None:
            maps = upsample_maps(maps, self.size)
        return logits, classes, scores, maps


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside the block; every module's ``training`` flag restored after it."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _map_size(upsample: bool | tuple[int, int] | list[int], input_size: tuple[int, int]) -> tuple[int, int] | None:
    if upsample is False:
        return None
    if upsample is True:
        return input_size
    if (
        isinstance(upsample, tuple | list)
        and len(upsample) == 2
        and all(isinstance(v, int) and v > 0 for v in upsample)
    ):
        return int(upsample[0]), int(upsample[1])
    fail("upsample", "False, True (the input size) or an (H, W) pair of positive ints", upsample)


def _ref(cam: CAM, x: torch.Tensor, k: int, size: tuple[int, int] | None) -> dict[str, np.ndarray]:
    out = cam(x, topk=k)
    maps = out.maps.float() if size is None else out.upsampled(size).float()
    return {
        "logits": out.logits.float().cpu().numpy(),
        "classes": out.classes.cpu().numpy(),
        "scores": out.scores.float().cpu().numpy(),
        "maps": maps.cpu().numpy(),
    }


def _compare(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], errors: dict[str, float]) -> None:
    """Record max abs errors of ``ours`` (onnxruntime) against ``ref`` (torch); refuse a graph that disagrees."""
    if not np.array_equal(ours["classes"], ref["classes"]):
        raise CamlocValueError(
            "the exported graph's top-k classes differ from camloc's PyTorch forward on the check batch; the model "
            "may have data-dependent control flow that tracing cannot capture (the file was not written)"
        )
    for name in ("logits", "scores", "maps"):
        err = float(np.abs(ours[name].astype(np.float64) - ref[name]).max()) if ref[name].size else 0.0
        errors[name] = max(errors.get(name, 0.0), err)
        scale = max(1.0, float(np.abs(ref[name]).max()) if ref[name].size else 1.0)
        if not err <= 1e-3 * scale:
            raise CamlocValueError(
                f"the exported graph's `{name}` differ from camloc's PyTorch forward by {err:.3g} (scale {scale:.3g}) "
                "on the check batch; the file was not written"
            )


def export_onnx(
    model: nn.Module,
    info: ModelInfo,
    path: str | os.PathLike[str],
    *,
    topk: int = 5,
    upsample: bool | tuple[int, int] = False,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
) -> OnnxExport:
    """Export ``model``'s CAM graph (module docstring) to ``path``, atomically; return what was written.

    Args:
        model: a classifier :class:`camloc.CAM` supports (float32 parameters); its modes are restored afterwards.
        info: its class names and preprocessing (the input size, and the metadata :class:`OnnxCAM` reads).
        topk: ``K``, the classes per image whose maps the graph outputs (capped at the number of classes).
        upsample: ``False``: maps at feature resolution; ``True``: at the input size; ``(H, W)``: at that size.
        opset: ONNX opset (>= 13).
        check: run the written graph in onnxruntime on random batches of 1 and 3 images (the traced batch is 2, so
            a batch size frozen into the graph is caught) against camloc's PyTorch forward; refuse (and write
            nothing) if the classes differ or an output differs by more than 1e-3 of its magnitude.
    """
    onnx = _require("onnx")
    if not isinstance(model, nn.Module):
        fail("model", "a torch.nn.Module", model, type_error=True)
    if not isinstance(info, ModelInfo):
        fail("info", "a camloc ModelInfo", info, type_error=True)
    check_number("topk", topk, low=1, integer=True)
    check_number("opset", opset, low=13, integer=True)
    if not isinstance(check, bool):
        fail("check", "a bool", check, type_error=True)
    dest = Path(path)
    input_size = (int(info.preprocess.size[0]), int(info.preprocess.size[1]))
    size = _map_size(upsample, input_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if param is not None and param.dtype != torch.float32:
        fail("model", "a float32 model (call model.float() before exporting)", f"parameters of dtype {param.dtype}")
    gen = torch.Generator().manual_seed(0)
    xs = {n: torch.randn(n, 3, *input_size, generator=gen).to(device) for n in (2, 1, 3)}
    cam = CAM(model)
    k = min(topk, cam.head.num_classes)
    if cam.head.num_classes != info.num_classes:
        fail("info", f"class names for the model's {cam.head.num_classes} classes", f"{info.num_classes} names")
    buf = io.BytesIO()
    with _eval_mode(model), torch.no_grad():
        refs = {n: _ref(cam, x, k, size) for n, x in xs.items()}  # also CAM's one-time check against model(x)
        feat_size = tuple(int(s) for s in cam.forward(xs[1])[0].shape[-2:])
        graph = _CamGraph(cam.resolved, k, size)
        dyn = {"input": {0: "batch"}, **{name: {0: "batch"} for name in OUTPUTS}}
        with warnings.catch_warnings():
            # camloc's argument checks become constants in the trace (they check shapes fixed by the export);
            # the check below runs the graph at other batch sizes against the PyTorch forward
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's own deprecation notices
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                graph,
                (xs[2],),
                buf,  # type: ignore[arg-type]  # file-like objects are accepted
                dynamo=False,
                input_names=["input"],
                output_names=list(OUTPUTS),
                dynamic_axes=dyn,
                opset_version=opset,
                do_constant_folding=True,
            )
    proto = onnx.load_from_string(buf.getvalue())
    map_size = size or (int(feat_size[0]), int(feat_size[1]))
    doc = {
        "schema_version": SCHEMA_VERSION,
        "camloc_version": __version__,
        "model": info.to_dict(),
        "topk": k,
        "input_size": list(input_size),
        "map_size": None if size is None else list(size),
        "feature_size": list(feat_size),
        "head": cam.head.describe(),
        "source": cam.resolved.source,
        "opset": opset,
        "outputs": {
            "logits": "[N, C] float32 logits",
            "classes": "[N, K] int64 top-K classes, best first",
            "scores": "[N, K] float32 softmax probabilities",
            "maps": "[N, K, h, w] float32 raw class activation maps"
            + (" (feature resolution)" if size is None else f" resized bilinearly to {size[0]}x{size[1]}"),
        },
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(doc, ensure_ascii=False)
    proto.doc_string = f"camloc {__version__} CAM graph of {info.name}: top-{k} classes and their maps"
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    errors: dict[str, float] = {}
    if check:
        ort = _require("onnxruntime")
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        for n in (1, 3, 2):
            got = session.run(list(OUTPUTS), {"input": xs[n].cpu().numpy()})
            _compare(dict(zip(OUTPUTS, got)), refs[n], errors)
    from camloc._io import atomic_write_bytes

    atomic_write_bytes(dest, data)
    return OnnxExport(dest, k, input_size, map_size, opset, errors)


def _read_doc(meta: dict[str, str], path: Path) -> dict[str, Any]:
    raw = meta.get(METADATA_KEY)
    if raw is None:
        fail("onnx", "a graph written by `camloc export` (with camloc metadata)", f"{path} without a 'camloc' key")
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        fail("onnx", "a graph with camloc metadata in JSON", f"{path} with unreadable metadata")
    if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION:
        got = doc.get("schema_version") if isinstance(doc, dict) else doc
        fail("onnx", f"camloc metadata of schema version {SCHEMA_VERSION}", f"{path} with version {got!r}")
    return doc


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The camloc JSON document of an exported ``.onnx`` file (module docstring), read with onnx."""
    onnx = _require("onnx")
    p = _existing(path)
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file
        raise CamlocValueError(f"`onnx` must be an ONNX model file; got {p} ({type(e).__name__}: {e})") from e
    return _read_doc({m.key: m.value for m in proto.metadata_props}, p)


def _existing(path: Any) -> Path:
    if not isinstance(path, str | os.PathLike):
        fail("onnx", "a path to an .onnx file", path, type_error=True)
    p = Path(path)
    if not p.is_file():
        fail("onnx", "an existing .onnx file", str(p))
    return p


def _providers(ort: Any, device: str | torch.device) -> list[str]:
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cpu":
        return ["CPUExecutionProvider"]
    if dev.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            fail("device", "cpu, or cuda with onnxruntime-gpu installed", f"{device!r} (no CUDAExecutionProvider)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    fail("device", "cpu or cuda", repr(device))


class OnnxCAM:
    """A map producer (``CamResult``, as :class:`camloc.CAM`) running an exported graph in onnxruntime.

    ``OnnxCAM(path)(x [N, 3, H, W], topk=k)`` returns ``CamResult(logits [N, C], classes [N, k], scores [N, k],
    maps [N, k, h, w], input_size)`` from the session's outputs (torch tensors on the CPU; no torch forward).
    The graph computes the maps of its top-``K`` classes only: ``topk <= K``, and ``classes`` must be ``None``.

    Attributes:
        info: the model's class names and preprocessing, from the file's metadata.
        topk: ``K`` of the graph.
        input_size: ``(H, W)`` the graph takes.
        metadata: the whole camloc metadata document.

    Args:
        path: the ``.onnx`` file written by :func:`export_onnx` / ``camloc export``.
        device: ``"cpu"`` or ``"cuda"`` (needs onnxruntime-gpu).
        threads: onnxruntime intra-op threads (None: its default, one per physical core).
    """

    def __init__(self, path: str | os.PathLike[str], *, device: str | torch.device = "cpu", threads: int | None = None):
        ort = _require("onnxruntime")
        p = _existing(path)
        opts = ort.SessionOptions()
        if threads is not None:
            check_number("threads", threads, low=1, integer=True)
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(p), opts, providers=_providers(ort, device))
        except CamlocError:
            raise
        except Exception as e:  # onnxruntime's InvalidProtobuf / InvalidGraph / Fail: not a usable ONNX file
            raise CamlocValueError(f"`onnx` must be an ONNX model file; got {p} ({type(e).__name__}: {e})") from e
        self.path = p
        self.metadata = _read_doc(dict(self.session.get_modelmeta().custom_metadata_map), p)
        names = tuple(o.name for o in self.session.get_outputs())
        inputs = [i.name for i in self.session.get_inputs()]
        if names != OUTPUTS or inputs != ["input"]:
            fail("onnx", f"a graph input -> {', '.join(OUTPUTS)}", f"{p} with {inputs} -> {list(names)}")
        self.info = ModelInfo.from_dict(self.metadata["model"])
        self.topk = int(self.metadata["topk"])
        self.input_size = (int(self.metadata["input_size"][0]), int(self.metadata["input_size"][1]))

    def __repr__(self) -> str:
        return f"OnnxCAM({str(self.path)!r}, model={self.info.name!r}, topk={self.topk}, input={self.input_size})"

    def __call__(self, x: torch.Tensor, *, classes: Any = None, topk: int = 5) -> CamResult:
        """Run the graph on ``x [N, 3, H, W]`` float; the first ``topk`` of its ``K`` classes and maps."""
        check_tensor("x", x, ndim=4, floating=True)
        check_number("topk", topk, low=1, integer=True)
        if classes is not None:
            fail("classes", "None for an ONNX graph (it computes the maps of its own top-K classes only)", classes)
        k = min(topk, self.info.num_classes)
        if k > self.topk:
            fail("topk", f"<= {self.topk}, the top-K the graph was exported with", topk)
        if tuple(x.shape[1:]) != (3, *self.input_size):
            fail("x", f"of shape [N, 3, {self.input_size[0]}, {self.input_size[1]}] (the graph's input)", x)
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        logits, cls, scores, maps = self.session.run(list(OUTPUTS), {"input": arr})
        return CamResult(
            torch.from_numpy(logits),
            torch.from_numpy(np.ascontiguousarray(cls[:, :k])).long(),
            torch.from_numpy(np.ascontiguousarray(scores[:, :k])),
            torch.from_numpy(np.ascontiguousarray(maps[:, :k])),
            self.input_size,
        )
