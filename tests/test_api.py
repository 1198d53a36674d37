"""Public API snapshot and the promise that ``import camloc`` stays cheap."""

from __future__ import annotations

import subprocess
import sys

import camloc

EXPECTED = {
    "AnnotationError",
    "CAM",
    "CamResult",
    "CamlocError",
    "CamlocTypeError",
    "CamlocValueError",
    "FitResult",
    "Head",
    "ImageLoadError",
    "LinearHead",
    "Localization",
    "ModelInfo",
    "NormPoolHead",
    "Preprocess",
    "ReluConvHead",
    "SklearnHead",
    "UnsupportedModelError",
    "__version__",
    "class_activation_maps",
    "component_boxes",
    "create_model",
    "fit_linear_head",
    "largest_component_box",
    "list_models",
    "localize",
    "normalize_maps",
    "pool_logits",
    "register_model",
    "resolve_head",
    "scale_boxes",
    "threshold_maps",
    "topk_classes",
    "upsample_maps",
}


def test_public_api_snapshot():
    assert set(camloc.__all__) == EXPECTED
    for name in EXPECTED - {"__version__"}:
        assert getattr(camloc, name) is not None
    assert callable(camloc.localize) and camloc.localize.__module__ == "camloc.localization"
    assert camloc.CamHead is camloc.resolve_head.__globals__["ResolvedHead"], "deprecated name stays importable"


def test_errors_subclass_builtins():
    assert issubclass(camloc.CamlocValueError, ValueError) and issubclass(camloc.CamlocTypeError, TypeError)
    for cls in (camloc.UnsupportedModelError, camloc.ImageLoadError, camloc.AnnotationError):
        assert issubclass(cls, camloc.CamlocError) and issubclass(cls, ValueError)


def test_import_is_cheap():
    code = (
        "import sys, camloc, camloc.data; print(int(any(m == 'torch' or m.startswith('torch.') for m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0", "import camloc must not import torch"
