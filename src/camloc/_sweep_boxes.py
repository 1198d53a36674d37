"""Box IoU in the two conventions used by camloc's metrics (shared by :mod:`camloc.sweep` and
:mod:`camloc.metrics`).

Conventions (boxes are ``(x0, y0, x1, y1)``):

* ``"continuous"`` — the camloc box convention: pixel (row i, column j) covers [j, j+1) x [i, i+1), a box
  covering columns c0..c1 and rows r0..r1 is (c0, r0, c1 + 1, r1 + 1), area = (x1 - x0) * (y1 - y0).
* ``"wsol"`` — clovaai/wsolevaluation's ``calculate_multiple_iou``: every width and height gets "+1",
  area = (x1 - x0 + 1) * (y1 - y0 + 1), intersection = max(0, min(x1) - max(x0) + 1) * max(0, ...).

In both, a pair whose union is <= 0 has IoU 0. The arithmetic is written in one fixed order (``iw * ih``,
then ``(area_a + area_b) - inter``, then one division) here and in the compiled sweep kernel, so both give
bit-identical float64 values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from camloc._checks import check_choice, fail

IOU_CONVENTIONS = ("continuous", "wsol")


def as_numpy(name: str, x: Any) -> np.ndarray:
    """``x`` (numpy array, torch tensor or nested sequence of numbers) as a numpy array (no copy if possible)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        return t.numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        try:
            arr = np.asarray(x)
        except ValueError:
            fail(name, "a rectangular array of numbers", f"a ragged {type(x).__name__}")
        if arr.dtype.kind not in "biuf":
            fail(name, "an array of numbers", f"{type(x).__name__} with dtype {arr.dtype}", type_error=True)
        return arr
    fail(name, "a numpy array or a torch.Tensor", x, type_error=True)
    raise AssertionError  # unreachable (fail raises)


def as_boxes(name: str, x: Any, *, allow_empty: bool = True) -> np.ndarray:
    """Validate boxes ``[N, 4]`` (a single box ``[4]`` is read as ``[1, 4]``); return float64 ``[N, 4]``."""
    arr = as_numpy(name, x)
    if arr.dtype.kind not in "iuf":
        fail(name, "a real-valued box array", f"dtype {arr.dtype}")
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 4:
        fail(name, "boxes of shape [N, 4] (x0, y0, x1, y1)", f"shape {tuple(arr.shape)}")
    if not allow_empty and arr.shape[0] == 0:
        fail(name, "at least one box", "shape (0, 4)")
    out = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(out).all():
        fail(name, "finite box coordinates", "NaN or inf coordinates")
    if (out[:, 2] < out[:, 0]).any() or (out[:, 3] < out[:, 1]).any():
        fail(name, "boxes with x1 >= x0 and y1 >= y0", "a box with x1 < x0 or y1 < y0")
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray, plus_one: bool) -> np.ndarray:
    """IoU of validated float64 boxes ``a [N, 4]`` and ``b [M, 4]`` -> ``[N, M]`` (no checks)."""
    ax0, ay0, ax1, ay1 = (a[:, i : i + 1] for i in range(4))
    bx0, by0, bx1, by1 = (b[None, :, i] for i in range(4))
    iw = np.minimum(ax1, bx1) - np.maximum(ax0, bx0)
    ih = np.minimum(ay1, by1) - np.maximum(ay0, by0)
    if plus_one:
        iw = iw + 1.0
        ih = ih + 1.0
        area_a = (ax1 - ax0 + 1.0) * (ay1 - ay0 + 1.0)
        area_b = (bx1 - bx0 + 1.0) * (by1 - by0 + 1.0)
    else:
        area_a = (ax1 - ax0) * (ay1 - ay0)
        area_b = (bx1 - bx0) * (by1 - by0)
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    union = (area_a + area_b) - inter
    ok = union > 0
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def box_iou(a: Any, b: Any, *, convention: str = "continuous") -> np.ndarray:
    """Pairwise IoU of boxes ``a [N, 4]`` and ``b [M, 4]`` -> float64 ``numpy.ndarray [N, M]``.

    Boxes are ``(x0, y0, x1, y1)`` (numpy or torch, any real dtype; a single box ``[4]`` counts as ``[1, 4]``).
    ``convention="continuous"`` (default) is the camloc box convention: area = (x1 - x0) * (y1 - y0), so an
    empty box (0, 0, 0, 0) has IoU 0 with everything. ``convention="wsol"`` reproduces clovaai/wsolevaluation
    (integer pixel corners, "+1" widths): area = (x1 - x0 + 1) * (y1 - y0 + 1). Pairs with a non-positive
    union get IoU 0.
    """
    check_choice("convention", convention, IOU_CONVENTIONS)
    aa = as_boxes("a", a)
    bb = as_boxes("b", b)
    return iou_matrix(aa, bb, convention == "wsol")
