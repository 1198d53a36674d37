"""Exact per-mask OpenCV engines: the reference the compiled passes are tested against, and their fallback.

One binary mask at a time: :func:`contour_boxes` is wsolevaluation's contour rule (``cv2.findContours``),
:func:`component_boxes` the paper rule's 8-connected components. :mod:`camloc.sweep` imports this module only
when it needs it: for checkpoints the compiled passes (:mod:`camloc._sweep_kernels`) leave to OpenCV's contour
order (area ties), and when numba is missing. The tests use them as oracles.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["component_boxes", "contour_boxes"]

_CONTOUR_INDEX = 0 if int(cv2.__version__.split(".")[0]) != 3 else 1


def contour_boxes(mask: np.ndarray, *, multi: bool, clip: bool) -> np.ndarray:
    """wsolevaluation's candidate boxes for one binary mask (uint8 [H, W], nonzero = kept) -> int64 [C, 4].

    ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``; single mode keeps the first contour with the largest
    ``cv2.contourArea``; each contour gives ``cv2.boundingRect`` as (x, y, x + w, y + h), with x1 clipped to
    W - 1 and y1 to H - 1 when ``clip``. No contour -> one box (0, 0, 0, 0).
    """
    h, w = mask.shape
    contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[_CONTOUR_INDEX]
    if len(contours) == 0:
        return np.zeros((1, 4), np.int64)
    if not multi:
        areas = [cv2.contourArea(cnt) for cnt in contours]
        contours = [contours[int(np.argmax(areas))]]
    out = np.empty((len(contours), 4), np.int64)
    for i, cnt in enumerate(contours):
        x, y, bw, bh = cv2.boundingRect(cnt)
        x1, y1 = x + bw, y + bh
        if clip:
            x1, y1 = min(x1, w - 1), min(y1, h - 1)
        out[i] = (x, y, x1, y1)
    return out


def component_boxes(mask: np.ndarray, *, multi: bool) -> np.ndarray:
    """8-connected component boxes ``(c0, r0, c1 + 1, r1 + 1)`` of one mask -> int64 [C, 4] (C = 0 if empty).

    Single mode: the component with the most pixels, ties -> the first in raster order of its first pixel.
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    if n <= 1:
        return np.zeros((0, 4), np.int64)
    st = stats[1:].astype(np.int64)
    boxes = np.stack(
        [
            st[:, cv2.CC_STAT_LEFT],
            st[:, cv2.CC_STAT_TOP],
            st[:, cv2.CC_STAT_LEFT] + st[:, cv2.CC_STAT_WIDTH],
            st[:, cv2.CC_STAT_TOP] + st[:, cv2.CC_STAT_HEIGHT],
        ],
        axis=1,
    )
    if multi:
        return boxes
    area = st[:, cv2.CC_STAT_AREA]
    tied = np.flatnonzero(area == area.max())
    if tied.size == 1:
        return boxes[tied]
    flat = labels.ravel()
    firsts = [int(np.argmax(flat == lab + 1)) for lab in tied]  # first pixel of each tied component
    return boxes[[tied[int(np.argmin(firsts))]]]
