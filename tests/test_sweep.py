"""camloc.sweep: protocol presets, hand-computed boxes, and parity of the one-pass engine with per-threshold loops.

References written here: ``ref_wsol_boxes`` transcribes clovaai/wsolevaluation ``evaluation.py``
(``compute_bboxes_from_scoremaps`` with ``inference.normalize_scoremap``): cv2.threshold + cv2.findContours per
threshold. ``ref_paper_boxes`` labels every thresholded mask with ``scipy.ndimage.label`` (8-connectivity).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from camloc import sweep
from camloc.errors import CamlocTypeError, CamlocValueError
from camloc.sweep import PROTOCOLS, Protocol, box_iou, normalize_score_map, sweep_boxes, sweep_hits

WSOL_THR = np.arange(0, 1, 0.001)
DELTAS = (0.3, 0.5, 0.7)


# ----------------------------------------------------------------------------------------------------------
# references (straightforward per-threshold loops)


def _own_float(score_map: np.ndarray) -> np.ndarray:
    """A copy in the map's own precision: float32 stays float32 (as a CAM from a network), else float64."""
    return np.array(score_map, dtype=np.float32 if np.asarray(score_map).dtype == np.float32 else np.float64)


def ref_wsol_boxes(score_map: np.ndarray, thresholds: np.ndarray, multi: bool) -> list[np.ndarray]:
    cam = _own_float(score_map)
    if np.isnan(cam).any() or cam.min() == cam.max():
        cam = np.zeros_like(cam)
    else:
        cam -= cam.min()
        cam /= cam.max()
    height, width = cam.shape
    image = np.expand_dims((cam * 255).astype(np.uint8), 2)
    out = []
    for t in thresholds:
        _, binary = cv2.threshold(src=image, thresh=int(t * np.max(image)), maxval=255, type=cv2.THRESH_BINARY)
        contours = cv2.findContours(image=binary, mode=cv2.RETR_TREE, method=cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(contours) == 0:
            out.append(np.zeros((1, 4)))
            continue
        if not multi:
            contours = [max(contours, key=cv2.contourArea)]
        boxes = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
        out.append(np.array(boxes, dtype=np.float64))
    return out


def ref_paper_boxes(score_map: np.ndarray, thresholds: np.ndarray, multi: bool) -> list[np.ndarray]:
    m = _own_float(score_map)
    mx = m.max()
    v = np.maximum(m, 0) / mx if mx > 0 else None
    out = []
    for t in thresholds:
        if v is None:
            out.append(np.zeros((1, 4)))
            continue
        labels, n = ndi.label(v >= t, structure=np.ones((3, 3)))
        if n == 0:
            out.append(np.zeros((1, 4)))
            continue
        sl = ndi.find_objects(labels)
        boxes = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in sl], dtype=np.float64)
        if not multi:
            counts = np.bincount(labels.ravel())[1:]
            boxes = boxes[[int(np.argmax(counts))]]  # ties: lowest label = first in raster order
        out.append(boxes)
    return out


def ref_iou(a: np.ndarray, b: np.ndarray, plus_one: bool) -> np.ndarray:
    one = 1.0 if plus_one else 0.0
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + one
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + one
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    union = (area_a[:, None] + area_b[None, :]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def ref_hits(boxes: list[np.ndarray], gt: np.ndarray, deltas: tuple[float, ...], plus_one: bool) -> np.ndarray:
    best = np.array([ref_iou(b, gt, plus_one).max() for b in boxes])
    return best[:, None] >= np.asarray(deltas)[None, :]


def smooth_map(rng: np.random.Generator, h: int, w: int, *, noise: float = 0.0, out: tuple[int, int] | None = None):
    yy, xx = np.mgrid[0:h, 0:w]
    m = np.zeros((h, w))
    for _ in range(int(rng.integers(1, 6))):
        cy, cx = rng.uniform(-2, h + 2), rng.uniform(-2, w + 2)
        s = rng.uniform(1.5, max(h, w) / 3)
        m += rng.uniform(0.1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    if noise:
        m += rng.normal(0, noise, (h, w))
    if out is not None:
        m = cv2.resize(m, (out[1], out[0]), interpolation=cv2.INTER_CUBIC)
    return m


def random_gt(rng: np.random.Generator, h: int, w: int, *, integer: bool) -> np.ndarray:
    g = []
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = rng.uniform(0, w - 2), rng.uniform(0, h - 2)
        x1, y1 = rng.uniform(x0 + 1, w), rng.uniform(y0 + 1, h)
        g.append([x0, y0, x1, y1])
    arr = np.array(g)
    return np.floor(arr) if integer else arr


def random_maps(seed: int, n: int) -> list[np.ndarray]:
    """Smooth maps (56x56, 64x80, some upsampled or noisy) plus a few pure-noise maps (many holes/islands)."""
    rng = np.random.default_rng(seed)
    maps = []
    for i in range(n):
        h, w = ((56, 56), (64, 80))[i % 2]
        if i % 17 == 5:
            maps.append(rng.random((int(rng.integers(6, 20)), int(rng.integers(6, 20)))))
        elif i % 5 == 0:
            maps.append(smooth_map(rng, 14, 14, out=(h, w)))
        else:
            maps.append(smooth_map(rng, h, w, noise=(0.0, 0.01, 0.05)[i % 3]))
    return maps


# ----------------------------------------------------------------------------------------------------------
# hand-computed maps (4 x 5); expected boxes worked out by hand at each threshold

UNIMODAL = np.array(
    [
        [0, 1, 2, 1, 0],
        [1, 3, 5, 3, 1],
        [1, 3, 4, 3, 1],
        [0, 1, 1, 1, 0],
    ],
    dtype=np.float64,
)


def test_unimodal_paper_boxes_by_hand():
    # v = M / 5, kept when v >= t: t=0 -> all; .2 -> M >= 1 (all but corners); .5 -> M >= 2.5; .9, 1 -> M = 5
    got = sweep_boxes(UNIMODAL, protocol="paper", thresholds=[0.0, 0.2, 0.5, 0.9, 1.0, 1.01])
    expected = [[0, 0, 5, 4], [0, 0, 5, 4], [1, 1, 4, 3], [2, 1, 3, 2], [2, 1, 3, 2], [0, 0, 0, 0]]
    np.testing.assert_array_equal(got, expected)


def test_unimodal_wsol_boxes_by_hand():
    # q = uint8(M / 5 * 255) = 0, 51, 102, 153, 204, 255; cut-off int(t * 255); kept when q > cut-off.
    # t=0 -> q > 0 (M >= 1): cols 0..4, rows 0..3 -> (0, 0, 5, 4) clipped to (0, 0, 4, 3)
    # t=.2 -> q > 51 (M >= 2): rows 0..2, cols 1..3 -> (1, 0, 4, 3) (y1 = 3 = H - 1, x1 = 4 = W - 1)
    # t=.7 -> q > 178 (M >= 4): rows 1..2 of column 2 -> (2, 1, 3, 3)
    # t=.999 -> q > 254: M = 5 only -> (2, 1, 3, 2)
    assert (UNIMODAL / 5 * 255).astype(np.uint8).tolist()[1] == [51, 153, 255, 153, 51]
    got = sweep_boxes(UNIMODAL, protocol="wsolevaluation", thresholds=[0.0, 0.2, 0.7, 0.999])
    np.testing.assert_array_equal(got, [[0, 0, 4, 3], [1, 0, 4, 3], [2, 1, 3, 3], [2, 1, 3, 2]])


def test_strict_vs_inclusive_on_a_plateau():
    # paper keeps v >= t, wsolevaluation keeps q > int(t * 255): at t = 0.2 the M = 1 ring (v = 0.2) is kept
    # by the paper protocol only
    paper = sweep_boxes(UNIMODAL, protocol="paper", thresholds=[0.2])[0]
    wsol = sweep_boxes(UNIMODAL, protocol="wsolevaluation", thresholds=[0.2])[0]
    assert paper.tolist() == [0, 0, 5, 4]
    assert wsol.tolist() == [1, 0, 4, 3]


LINE_AND_BLOCK = np.array(
    [
        [9, 9, 9, 9, 9],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 8, 8],
        [0, 0, 0, 8, 8],
    ],
    dtype=np.float64,
)


def test_multimodal_pixel_count_vs_contour_area():
    # the line has 5 pixels but contour area 0; the 2x2 block 4 pixels and contour area 1
    assert sweep_boxes(LINE_AND_BLOCK, protocol="paper", thresholds=[0.5]).tolist() == [[0, 0, 5, 1]]
    # wsol: block (3, 2, w=2, h=2) -> (3, 2, 5, 4) clipped to (3, 2, 4, 3)
    assert sweep_boxes(LINE_AND_BLOCK, protocol="wsolevaluation", thresholds=[0.5]).tolist() == [[3, 2, 4, 3]]
    # above 8/9 only the line remains
    assert sweep_boxes(LINE_AND_BLOCK, protocol="paper", thresholds=[0.95]).tolist() == [[0, 0, 5, 1]]
    assert sweep_boxes(LINE_AND_BLOCK, protocol="wsolevaluation", thresholds=[0.95]).tolist() == [[0, 0, 4, 1]]


def test_multi_box_counts_every_component():
    gt_block = np.array([[3, 2, 5, 4]], dtype=np.float64)
    single = sweep_hits(LINE_AND_BLOCK, gt_block, protocol="paper", thresholds=[0.5], iou_thresholds=(0.5,))
    multi = sweep_hits(
        LINE_AND_BLOCK, gt_block, protocol="paper", thresholds=[0.5], iou_thresholds=(0.5,), multi_box=True
    )
    assert single.tolist() == [[False]]  # the selected box is the line
    assert multi.tolist() == [[True]]  # the block is a candidate too


def test_ties_pick_first_component_in_raster_order():
    left_first = np.array([[5, 5, 0, 5, 5], [5, 5, 0, 5, 5], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=float)
    right_first = np.array([[0, 0, 0, 5, 5], [5, 5, 0, 5, 5], [5, 5, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=float)
    assert sweep_boxes(left_first, protocol="paper", thresholds=[0.5]).tolist() == [[0, 0, 2, 2]]
    assert sweep_boxes(right_first, protocol="paper", thresholds=[0.5]).tolist() == [[3, 0, 5, 2]]
    # wsolevaluation keeps OpenCV's choice among equal contour areas (whatever the reference returns)
    for m in (left_first, right_first):
        want = ref_wsol_boxes(m, np.array([0.5]), multi=False)[0]
        np.testing.assert_array_equal(sweep_boxes(m, protocol="wsolevaluation", thresholds=[0.5]), want)


def test_touching_borders_and_flat_maps():
    full = np.ones((4, 5))
    assert sweep_boxes(full, protocol="paper", thresholds=[0.0, 0.5, 1.0]).tolist() == [[0, 0, 5, 4]] * 3
    # wsolevaluation: a flat map becomes zeros -> nothing is > 0 -> (0, 0, 0, 0)
    assert sweep_boxes(full, protocol="wsolevaluation", thresholds=[0.0, 0.5]).tolist() == [[0, 0, 0, 0]] * 2
    # paper: max <= 0 -> empty at every threshold, even t = 0
    for m in (np.zeros((4, 5)), -np.ones((4, 5))):
        assert sweep_boxes(m, protocol="paper", thresholds=[0.0, 0.2]).tolist() == [[0, 0, 0, 0]] * 2
    # negatives are clipped to 0 before normalising by the max
    neg = np.array([[-4.0, 2.0], [1.0, -1.0]])
    np.testing.assert_allclose(normalize_score_map(neg, protocol="paper"), [[0, 1], [0.5, 0]])
    # a map whose blob touches the right and bottom borders
    corner = np.zeros((4, 5))
    corner[2:, 3:] = 1.0
    assert sweep_boxes(corner, protocol="paper", thresholds=[0.5]).tolist() == [[3, 2, 5, 4]]
    assert sweep_boxes(corner, protocol="wsolevaluation", thresholds=[0.5]).tolist() == [[3, 2, 4, 3]]


def test_hole_contours_are_wsol_candidates():
    # a 2-pixel-thick ring around a 3x3 hole (rows/cols 2..4): the outer contour's box is (0, 0, 7, 7), clipped
    # to (0, 0, 6, 6); the hole contour runs through the ring pixels next to the hole: x=1, w=5 -> (1, 1, 6, 6)
    m = np.ones((7, 7))
    m[2:5, 2:5] = 0.0
    gt_hole = np.array([[1, 1, 6, 6]], dtype=np.float64)
    single = sweep_hits(m, gt_hole, protocol="wsolevaluation", thresholds=[0.5], iou_thresholds=(0.99,))
    multi = sweep_hits(m, gt_hole, protocol="wsolevaluation", thresholds=[0.5], iou_thresholds=(0.99,), multi_box=True)
    assert single.tolist() == [[False]]  # selected: outer contour (0, 0, 6, 6) after clipping
    assert multi.tolist() == [[True]]
    for multi_box in (False, True):
        want = ref_hits(ref_wsol_boxes(m, np.array([0.5]), multi_box), gt_hole, (0.99,), True)
        got = sweep_hits(
            m, gt_hole, protocol="wsolevaluation", thresholds=[0.5], iou_thresholds=(0.99,), multi_box=multi_box
        )
        np.testing.assert_array_equal(got, want)


def test_nan_maps():
    m = UNIMODAL.copy()
    m[1, 1] = np.nan
    with pytest.raises(CamlocValueError, match="`score_map` must be finite"):
        sweep_boxes(m, protocol="paper")
    with pytest.raises(CamlocValueError, match=r"`score_maps\[3\]` must be finite"):
        sweep_hits(m, np.array([[0, 0, 2, 2]]), protocol="paper", name="score_maps[3]")
    # wsolevaluation: a NaN map becomes zeros (as normalize_scoremap does) -> empty boxes, no error
    assert sweep_boxes(m, protocol="wsolevaluation", thresholds=[0.1]).tolist() == [[0, 0, 0, 0]]
    inf = UNIMODAL.copy()
    inf[0, 0] = np.inf
    for proto in ("paper", "wsolevaluation"):
        with pytest.raises(CamlocValueError, match="inf"):
            sweep_boxes(inf, protocol=proto)


def test_inputs_and_validation():
    t = torch.tensor(UNIMODAL, dtype=torch.float32)
    np.testing.assert_array_equal(sweep_boxes(t, thresholds=[0.5]), sweep_boxes(UNIMODAL, thresholds=[0.5]))
    with pytest.raises(CamlocValueError, match="`score_map` must be a non-empty 2-D"):
        sweep_boxes(np.zeros((2, 3, 4)))
    with pytest.raises(CamlocTypeError, match="`score_map`"):
        sweep_boxes("not a map")
    with pytest.raises(CamlocValueError, match="`thresholds` must be finite"):
        sweep_boxes(UNIMODAL, thresholds=[0.1, np.nan])
    with pytest.raises(CamlocValueError, match="`gt_boxes` must be at least one box"):
        sweep_hits(UNIMODAL, np.zeros((0, 4)))
    with pytest.raises(CamlocValueError, match="`gt_boxes` must be boxes with x1 >= x0"):
        sweep_hits(UNIMODAL, np.array([[3, 0, 1, 2]]))
    with pytest.raises(CamlocValueError, match="`protocol` must be one of"):
        sweep_boxes(UNIMODAL, protocol="nope")
    with pytest.raises(CamlocValueError, match="`normalize`"):
        Protocol("x", "none", True, True, "wsol", "contour", True, "zeros", (0.5,))


def test_protocol_presets():
    paper, wsol = PROTOCOLS["paper"], PROTOCOLS["wsolevaluation"]
    assert (paper.normalize, paper.quantize_uint8, paper.strict_greater) == ("max", False, False)
    assert (paper.iou_convention, paper.candidates, paper.thresholds) == ("continuous", "component", (0.2,))
    assert (wsol.normalize, wsol.quantize_uint8, wsol.strict_greater) == ("minmax", True, True)
    assert (wsol.iou_convention, wsol.candidates, wsol.clip_last_pixel) == ("wsol", "contour", True)
    np.testing.assert_array_equal(wsol.thresholds, np.arange(0, 1, 0.001))
    custom = sweep.replace("paper", thresholds=np.arange(0, 1, 0.25))
    assert custom.thresholds == (0.0, 0.25, 0.5, 0.75) and custom.normalize == "max"
    assert sweep_boxes(UNIMODAL, protocol=custom).shape == (4, 4)


def test_thresholds_order_and_duplicates_are_kept():
    thr = [0.9, 0.2, 0.5, 0.2, 0.0]
    got = sweep_boxes(UNIMODAL, protocol="paper", thresholds=thr)
    want = np.concatenate(ref_paper_boxes(UNIMODAL, np.array(thr), multi=False))
    np.testing.assert_array_equal(got, want)


def test_box_iou_reexported():
    assert box_iou(np.array([0, 0, 2, 2]), np.array([[1, 1, 3, 3]]))[0, 0] == pytest.approx(1 / 7)


# ----------------------------------------------------------------------------------------------------------
# parity with the per-threshold loops: identical curves, not just maxima


def _check_parity(maps, protocol, thresholds, seed):
    rng = np.random.default_rng(seed)
    plus_one = PROTOCOLS[protocol].iou_convention == "wsol"
    ref = ref_wsol_boxes if protocol == "wsolevaluation" else ref_paper_boxes
    for m in maps:
        h, w = m.shape
        gt = random_gt(rng, h, w, integer=plus_one)
        single = ref(m, thresholds, False)
        np.testing.assert_array_equal(sweep_boxes(m, protocol=protocol, thresholds=thresholds), np.concatenate(single))
        np.testing.assert_array_equal(
            sweep_hits(m, gt, protocol=protocol, thresholds=thresholds, iou_thresholds=DELTAS),
            ref_hits(single, gt, DELTAS, plus_one),
        )
        np.testing.assert_array_equal(
            sweep_hits(m, gt, protocol=protocol, thresholds=thresholds, iou_thresholds=DELTAS, multi_box=True),
            ref_hits(ref(m, thresholds, True), gt, DELTAS, plus_one),
        )


@pytest.mark.slow
def test_parity_wsolevaluation_random_maps():
    _check_parity(random_maps(0, 200), "wsolevaluation", np.arange(0, 1, 0.01), seed=1)
    _check_parity(random_maps(1, 30), "wsolevaluation", WSOL_THR, seed=1)  # the default 1000 thresholds


@pytest.mark.slow
def test_parity_paper_random_maps():
    _check_parity(random_maps(2, 200), "paper", np.linspace(0, 1, 101), seed=3)


@pytest.mark.slow
def test_parity_large_upsampled_maps():
    rng = np.random.default_rng(4)
    maps = [smooth_map(rng, 7, 7, out=(224, 224)) for _ in range(4)] + [smooth_map(rng, 14, 14, out=(160, 200))]
    _check_parity(maps, "wsolevaluation", WSOL_THR, seed=5)
    _check_parity(maps, "paper", np.arange(0, 1, 0.01), seed=6)


def test_float32_maps_are_normalised_in_float32():
    # CAMs come from networks as float32, and wsolevaluation normalises and quantises them in float32; doing
    # it in float64 moves a few pixels in a million by one uint8 level. camloc follows the map's own precision.
    rng = np.random.default_rng(16)
    moved = 0
    for _ in range(20):
        m = (rng.standard_normal((224, 224)) * 3 + 1).astype(np.float32)
        v32 = m - m.min()
        v32 = v32 / v32.max()
        np.testing.assert_array_equal(normalize_score_map(m, protocol="wsolevaluation"), v32.astype(np.float64))
        v64 = m.astype(np.float64) - m.min()
        v64 = v64 / v64.max()
        moved += int(((v32 * 255).astype(np.uint8) != (v64 * 255).astype(np.uint8)).sum())
        p32 = np.maximum(m, 0) / m.max()
        np.testing.assert_array_equal(normalize_score_map(m, protocol="paper"), p32.astype(np.float64))
    assert moved > 0  # the two precisions do disagree on such maps, so the check above means something


def test_parity_float32_maps():
    maps = [m.astype(np.float32) for m in random_maps(17, 12)]
    _check_parity(maps, "wsolevaluation", WSOL_THR, seed=18)
    _check_parity(maps, "paper", np.arange(0, 1, 0.01), seed=19)


@pytest.mark.parametrize("limit", [0, 10**9])
def test_parity_both_exact_routes_for_contours(monkeypatch, limit):
    # limit 0: every unsettled checkpoint goes through the filled-mask passes; huge: through cv2.findContours
    monkeypatch.setattr(sweep, "_PER_MASK_LIMIT", limit)
    from camloc import _sweep_reference

    calls = {"bg_pass": 0, "contour_boxes": 0}
    for name, module in (("bg_pass", sweep._k), ("contour_boxes", _sweep_reference)):
        original = getattr(module, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    _check_parity(random_maps(7, 30), "wsolevaluation", np.arange(0, 1, 0.004), seed=8)
    used = "bg_pass" if limit == 0 else "contour_boxes"
    assert calls[used] > 0


def test_parity_without_kernel(monkeypatch):
    # the OpenCV per-mask engine (used when numba is missing) gives the same answers
    monkeypatch.setattr(sweep, "_USE_KERNEL", False)
    maps = random_maps(9, 8)
    _check_parity(maps, "wsolevaluation", np.arange(0, 1, 0.01), seed=10)
    _check_parity(maps, "paper", np.arange(0, 1, 0.02), seed=11)


def test_random_dense_masks_topology():
    # uniform noise: many components, holes, islands inside holes, ties of contour areas
    rng = np.random.default_rng(12)
    maps = [rng.random((int(rng.integers(5, 25)), int(rng.integers(5, 25)))) for _ in range(40)]
    _check_parity(maps, "wsolevaluation", np.arange(0, 1, 0.01), seed=13)
    _check_parity(maps, "paper", np.arange(0, 1, 0.01), seed=14)


def test_fast_path_does_not_import_the_opencv_reference_engines() -> None:
    # the compiled passes and the OpenCV oracles live in separate modules; a sweep the kernels settle alone
    # (no area ties) never imports the latter
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from camloc.sweep import sweep_boxes\n"
        "m = np.add.outer(np.arange(20.0), np.arange(30.0))\n"
        "sweep_boxes(m, protocol='paper')\n"
        "print('camloc._sweep_reference' in sys.modules, 'cv2' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
