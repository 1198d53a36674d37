"""Export for deployment and for detection tools: ONNX graphs, COCO and YOLO files.

- :mod:`camloc.export.onnx`: :func:`export_onnx` (a graph ``input -> logits, classes, scores, maps``) and
  :class:`OnnxCAM` (the same :class:`camloc.CamResult` from onnxruntime); needs ``pip install camloc[onnx]``.
- :mod:`camloc.export.detections`: CAM boxes as COCO results / instances files and YOLO label files, pure
  functions over explain's results (``ImageResult`` objects or ``results.jsonl`` rows) plus class names.

Importing this package imports neither torch nor onnx; each name loads its module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "METADATA_KEY": "camloc.export.onnx",
    "OnnxCAM": "camloc.export.onnx",
    "OnnxExport": "camloc.export.onnx",
    "export_onnx": "camloc.export.onnx",
    "read_onnx_metadata": "camloc.export.onnx",
    "EXPORT_FORMATS": "camloc.export.detections",
    "Detection": "camloc.export.detections",
    "DetectionRecord": "camloc.export.detections",
    "as_record": "camloc.export.detections",
    "coco_instances": "camloc.export.detections",
    "coco_results": "camloc.export.detections",
    "select_boxes": "camloc.export.detections",
    "write_coco": "camloc.export.detections",
    "write_detections": "camloc.export.detections",
    "write_yolo": "camloc.export.detections",
    "yolo_lines": "camloc.export.detections",
}

__all__ = [
    "EXPORT_FORMATS",
    "METADATA_KEY",
    "Detection",
    "DetectionRecord",
    "OnnxCAM",
    "OnnxExport",
    "as_record",
    "coco_instances",
    "coco_results",
    "export_onnx",
    "read_onnx_metadata",
    "select_boxes",
    "write_coco",
    "write_detections",
    "write_yolo",
    "yolo_lines",
]

if TYPE_CHECKING:  # pragma: no cover
    from camloc.export.detections import (
        EXPORT_FORMATS,
        Detection,
        DetectionRecord,
        as_record,
        coco_instances,
        coco_results,
        select_boxes,
        write_coco,
        write_detections,
        write_yolo,
        yolo_lines,
    )
    from camloc.export.onnx import METADATA_KEY, OnnxCAM, OnnxExport, export_onnx, read_onnx_metadata


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'camloc.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
