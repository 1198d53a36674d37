"""Compiled threshold-sweep passes (numba): the fast path of :mod:`camloc.sweep`.

The sweep never labels one mask per threshold. The masks of a sweep are nested: every threshold keeps the
pixels whose value passes a cut-off, and the kept set only grows as the threshold falls. The caller gives each
pixel a *bucket*: the index of the first checkpoint (distinct cut-off, from the smallest mask to the largest)
whose mask holds it, ``K`` if none does. Thresholds that give the same mask share a checkpoint.

* :func:`fg_pass` adds the pixels bucket by bucket to a union-find over 8-connected components that keeps each
  component's pixel count, bounding box, first pixel in raster order, twice the polygon area of its outer
  contour and its Euler number (bit-quad counts: 1 - #holes), and records the answers at every checkpoint: one
  pass over the pixels for the whole sweep.
* :func:`bg_pass` runs the other way (the background grows as the threshold rises) with a union-find over
  4-connected background components that know whether they touch the image border. Those that do not are the
  holes, which is what OpenCV's ``RETR_TREE`` reports as hole contours (box = the hole's pixel bbox grown by one
  pixel per side). It also returns each pixel's bucket in the *filled* masks (mask + holes + what is inside).

Exactness of the contour (wsolevaluation) semantics, checked against ``cv2.findContours`` on random masks:
OpenCV returns one outer contour per 8-connected component and one hole contour per hole;
``cv2.contourArea`` of an outer contour (polygon through border pixel centres) equals
``#(2x2 windows with 4 pixels) + 0.5 * #(windows with 3 pixels)`` of the component with its holes filled; the
top-level filled components are the 8-connected components of the filled mask, and a hole or nested
contour never has a larger area than the top-level contour around it. So the largest contour is found
exactly by :func:`fg_pass` on the raw buckets wherever no other component than the largest has a hole, and on
the filled-mask buckets (from :func:`bg_pass`) everywhere, except when several components share the largest
area: then OpenCV's contour order decides, and the caller re-evaluates that checkpoint with
:func:`camloc._sweep_reference.contour_boxes`. These identities are what ``tests/test_sweep.py`` checks
against ``cv2.findContours`` on random smooth and noise maps.

Without numba, the per-mask OpenCV engines of :mod:`camloc._sweep_reference` evaluate each distinct mask
(slower, same answers); this module imports neither them nor OpenCV.
"""

from __future__ import annotations

import threading

import numpy as np

try:  # numba is optional: the per-mask OpenCV engines give the same answers, only slower.
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None  # type: ignore[assignment]
    HAVE_NUMBA = False

SELECT_NONE = 0  # no single box (multi-box mode only)
SELECT_PIXELS = 1  # the component with the most pixels; ties -> first pixel in raster order
SELECT_AREA = 2  # the component with the largest outer-contour polygon area (ties reported)


def _neighbourhood_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Look-up tables over the 8 neighbours of a pixel, bit i = ring position i (0 NW, 1 N, 2 NE, 3 E, 4 SE,
    5 S, 6 SW, 7 W; consecutive positions touch).

    ``rep8``: one neighbour per run of set positions (each run is one 8-connected component already).
    ``rep4``: one cardinal neighbour per group of 4-connected cardinals (N and E are joined through NE, ...).
    ``da2``: twice the polygon area gained by adding the pixel (+1 per 2x2 window already holding >= 2 pixels).
    ``de4``: change of 4 x Euler number (bit-quad counts: +1 per window with 1 pixel, -1 with 3, -2 diagonal).
    ``low``: index of the lowest set bit (-1 for 0).
    """

    def e4(tl: int, tr: int, bl: int, br: int) -> int:
        n = tl + tr + bl + br
        return {1: 1, 3: -1}.get(n, -2 if (n == 2 and tl == br) else 0)

    rep8 = np.zeros(256, np.uint8)
    rep4 = np.zeros(256, np.uint8)
    da2 = np.zeros(256, np.int32)
    de4 = np.zeros(256, np.int32)
    low = np.full(256, -1, np.int64)
    for m in range(256):
        b = [(m >> i) & 1 for i in range(8)]
        runs = sum(1 << i for i in range(8) if b[i] and not b[(i - 1) % 8])
        rep8[m] = 2 if m == 255 else runs
        groups: list[set[int]] = [{i} for i in (1, 3, 5, 7) if b[i]]
        for i in (1, 3, 5, 7):
            j = (i + 2) % 8
            if b[i] and b[j] and b[(i + 1) % 8]:
                gi = next(g for g in groups if i in g)
                gj = next(g for g in groups if j in g)
                if gi is not gj:
                    gi |= gj
                    groups.remove(gj)
        rep4[m] = sum(1 << min(g) for g in groups)
        quads = ((b[0], b[1], b[7]), (b[1], b[2], b[3]), (b[7], b[6], b[5]), (b[3], b[5], b[4]))
        da2[m] = sum(1 for q in quads if sum(q) >= 2)
        # windows around p as (TL, TR, BL, BR) with p's slot marked None
        wins = ((b[0], b[1], b[7], None), (b[1], b[2], None, b[3]), (b[7], None, b[6], b[5]), (None, b[3], b[5], b[4]))
        d = 0
        for win in wins:
            before = tuple(0 if x is None else x for x in win)
            after = tuple(1 if x is None else x for x in win)
            d += e4(*after) - e4(*before)
        de4[m] = d
        low[m] = (m & -m).bit_length() - 1 if m else -1
    return rep8, rep4, da2, de4, low


REP8, REP4, DA2, DE4, LOW = _neighbourhood_tables()


def _njit(fn):  # type: ignore[no-untyped-def]
    return numba.njit(cache=True, nogil=True)(fn) if HAVE_NUMBA else fn


MAX_SIDE = 32767  # pixel order packs (row, column) into one int32
_WORK_ROWS = 12  # int32 rows a pass needs (pixel order, union-find and per-component statistics)
_CACHE_MAX = 1 << 20  # padded pixels up to which a thread keeps its workspace between calls (<= 52 MB)
_tls = threading.local()


def workspace(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Scratch memory for one pass over an ``[h, w]`` map: int32 ``[_WORK_ROWS, n]`` and uint8 ``[n]``,
    ``n >= (h + 2) * (w + 2)`` (contents undefined; the passes initialise what they read).

    Each thread keeps its own and reuses it: on a 224 x 224 map, allocating the ~2.5 MB afresh costs about as
    much in page faults as the pass itself. Larger maps than ``_CACHE_MAX`` padded pixels get fresh buffers.
    """
    n = (h + 2) * (w + 2)
    if n > _CACHE_MAX:
        return np.empty((_WORK_ROWS, n), np.int32), np.empty(n, np.uint8)
    cached = getattr(_tls, "work", None)
    if cached is None or cached[1].shape[0] < n:
        cap = max(n, 64 * 64)
        cached = (np.empty((_WORK_ROWS, cap), np.int32), np.empty(cap, np.uint8))
        _tls.work = cached
    return cached


@_njit
def _neighbour_code(a: np.ndarray, pp: int, wp: int) -> int:
    """8-bit code of the 8 neighbours of padded pixel ``pp`` in ``a`` (row stride ``wp``), clockwise from top-left."""
    return (
        a[pp - wp - 1]
        | (a[pp - wp] << 1)
        | (a[pp - wp + 1] << 2)
        | (a[pp + 1] << 3)
        | (a[pp + wp + 1] << 4)
        | (a[pp + wp] << 5)
        | (a[pp + wp - 1] << 6)
        | (a[pp - 1] << 7)
    )


@_njit
def _find(parent: np.ndarray, x: int) -> int:
    while True:
        px = parent[x]
        if px == x:
            return x
        gx = parent[px]
        parent[x] = gx
        x = gx


@_njit
def _link(
    root: int,
    o: int,
    parent: np.ndarray,
    size: np.ndarray,
    bx0: np.ndarray,
    by0: np.ndarray,
    bx1: np.ndarray,
    by1: np.ndarray,
) -> None:
    """Union-find: hang root ``o`` under ``root``; sizes add and the bounding boxes merge into ``root``'s."""
    parent[o] = root
    size[root] += size[o]
    bx0[root] = min(bx0[root], bx0[o])
    bx1[root] = max(bx1[root], bx1[o])
    by0[root] = min(by0[root], by0[o])
    by1[root] = max(by1[root], by1[o])


@_njit
def map_stats(m: np.ndarray) -> tuple[float, float, bool, bool]:
    """``(min, max, has_nan, has_inf)`` of a 1-D float array in one pass (min / max over the finite values)."""
    mn = np.inf
    mx = -np.inf
    has_nan = False
    has_inf = False
    for i in range(m.shape[0]):
        x = m[i]
        if x != x:
            has_nan = True
        elif x == np.inf or x == -np.inf:
            has_inf = True
        else:
            if x < mn:
                mn = x
            if x > mx:
                mx = x
    return mn, mx, has_nan, has_inf


@_njit
def quantize_map(m: np.ndarray, clip_low: bool, lo: float, rng: float, c255: float) -> tuple[np.ndarray, int]:
    """``q = uint8(((m - lo) / rng) * 255)`` (or ``max(m, lo)`` in place of ``m - lo`` with ``clip_low``) and
    ``max(q)``; ``m`` 1-D float, ``lo`` / ``rng`` / ``c255`` scalars of ``m``'s dtype, so the arithmetic is
    the map's own (float32 stays float32) and equals NumPy's elementwise result bit for bit."""
    q = np.empty(m.shape[0], np.uint8)
    qmax = 0
    for i in range(m.shape[0]):
        x = m[i]
        if clip_low:
            if x < lo:
                x = lo
        else:
            x = x - lo
        v = int((x / rng) * c255)
        q[i] = v
        if v > qmax:
            qmax = v
    return q, qmax


@_njit
def float_buckets(values: np.ndarray, cuts: np.ndarray, strict: bool) -> np.ndarray:
    """Bucket of each value for ascending unique ``cuts`` (checkpoint K-1-j keeps ``value >= cuts[j]``, or
    ``>`` when ``strict``): ``K - #{j: cut j passes}`` (int32); exact comparisons, interpolated first guess."""
    n = cuts.shape[0]
    out = np.empty(values.shape[0], np.int32)
    span = cuts[n - 1] - cuts[0]
    scale = (n - 1) / span if n > 1 and span > 0 else 0.0
    for p in range(values.shape[0]):
        v = values[p]
        g = (v - cuts[0]) * scale
        i = 0 if g < 0 else (n if g > n else int(g))
        # i = number of cuts that pass: cut < v (strict) or cut <= v
        steps = 0
        while steps < 4:
            lo_ok = i == 0 or (cuts[i - 1] < v if strict else cuts[i - 1] <= v)
            hi_ok = i == n or not (cuts[i] < v if strict else cuts[i] <= v)
            if lo_ok and hi_ok:
                break
            i = i - 1 if not lo_ok else i + 1
            steps += 1
        if steps == 4:  # far from uniform: binary search
            lo = 0
            hi = n
            while lo < hi:
                mid = (lo + hi) // 2
                if cuts[mid] < v if strict else cuts[mid] <= v:
                    lo = mid + 1
                else:
                    hi = mid
            i = lo
        out[p] = n - i
    return out


@_njit
def _order(bucket: np.ndarray, h: int, w: int, n_b: int, orc: np.ndarray) -> np.ndarray:
    """Counting sort by bucket (0..n_b) into ``orc`` (int32 [>= h * w]): pixels as ``r << 16 | c`` (h, w <=
    MAX_SIDE), raster order within a bucket. Returns the bucket starts, int64 [n_b + 2]."""
    starts = np.zeros(n_b + 2, np.int64)
    for p in range(h * w):
        starts[bucket[p] + 1] += 1
    for b in range(n_b + 1):
        starts[b + 1] += starts[b]
    fill = starts.copy()
    p = 0
    for r in range(h):
        for c in range(w):
            b = bucket[p]
            pos = fill[b]
            orc[pos] = (r << 16) | c
            fill[b] = pos + 1
            p += 1
    return starts


@_njit
def _box_iou1(
    ax0: float, ay0: float, ax1: float, ay1: float, bx0: float, by0: float, bx1: float, by1: float, plus_one: bool
) -> float:
    # Same operation order as camloc._sweep_boxes.iou_matrix (bit-identical float64 results).
    iw = min(ax1, bx1) - max(ax0, bx0)
    ih = min(ay1, by1) - max(ay0, by0)
    if plus_one:
        iw = iw + 1.0
        ih = ih + 1.0
        area_a = (ax1 - ax0 + 1.0) * (ay1 - ay0 + 1.0)
        area_b = (bx1 - bx0 + 1.0) * (by1 - by0 + 1.0)
    else:
        area_a = (ax1 - ax0) * (ay1 - ay0)
        area_b = (bx1 - bx0) * (by1 - by0)
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (area_a + area_b) - inter
    if union > 0:
        return inter / union
    return 0.0


@_njit
def _level(bx0: float, by0: float, bx1: float, by1: float, gt: np.ndarray, deltas: np.ndarray, plus_one: bool) -> int:
    """How many of the ascending ``deltas`` the box ``(bx0, by0, bx1, by1)`` reaches (best IoU over ``gt``)."""
    best = 0.0
    for g in range(gt.shape[0]):
        v = _box_iou1(bx0, by0, bx1, by1, gt[g, 0], gt[g, 1], gt[g, 2], gt[g, 3], plus_one)
        if v > best:
            best = v
    lvl = 0
    for j in range(deltas.shape[0]):
        if best >= deltas[j]:
            lvl = j + 1
    return lvl


@_njit
def _match_level(
    x0: int, y0: int, x1: int, y1: int, h: int, w: int, gt: np.ndarray, deltas: np.ndarray, plus_one: bool, clip: bool
) -> int:
    """:func:`_level` of an integer pixel box, x1 / y1 clipped to w - 1 / h - 1 if ``clip``."""
    bx1 = float(x1)
    by1 = float(y1)
    if clip:
        bx1 = min(bx1, float(w - 1))
        by1 = min(by1, float(h - 1))
    return _level(float(x0), float(y0), bx1, by1, gt, deltas, plus_one)


@_njit
def box_levels(boxes: np.ndarray, gt: np.ndarray, deltas: np.ndarray, plus_one: bool) -> np.ndarray:
    """:func:`_level` of each float64 box [K, 4] -> int64 [K]."""
    out = np.empty(boxes.shape[0], np.int64)
    for k in range(boxes.shape[0]):
        out[k] = _level(boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3], gt, deltas, plus_one)
    return out


@_njit
def fg_pass(
    bucket: np.ndarray,
    h: int,
    w: int,
    n_ck: int,
    select: int,
    multi: bool,
    holes: bool,
    gt: np.ndarray,
    deltas: np.ndarray,
    plus_one: bool,
    clip: bool,
    work: np.ndarray,
    flags: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grow the mask checkpoint by checkpoint; union-find over 8-connected foreground components.

    ``bucket``: int32 [h * w], first checkpoint whose mask holds the pixel (``n_ck`` = none). Returns, per
    checkpoint: ``box`` int64 [K, 4] (selected component's ``(c0, r0, c1 + 1, r1 + 1)``; -1s if the mask is
    empty; with SELECT_NONE only ``box[:, 0] >= 0`` = "not empty"), ``hit`` uint8 [K, D] (multi: some
    component's box, x1/y1 clipped to w-1/h-1 if ``clip``, has IoU >= deltas[j] with some GT box), ``ties`` int64
    [K] (SELECT_AREA: components sharing the largest area) and ``holed`` int64 [K] (with ``holes``: how many
    components other than the selected one have a hole; per-component Euler numbers from bit-quad counts).
    """
    wp = w + 2
    n_all = (h + 2) * wp
    n_pix = h * w
    n_delta = deltas.shape[0]
    orc = work[0]
    starts = _order(bucket, h, w, n_ck, orc)
    off = np.array([-wp - 1, -wp, -wp + 1, 1, wp + 1, wp, wp - 1, -1], np.int64)
    inmask = flags
    inmask[:n_all] = 0
    parent, size, bx0, by0, bx1, by1 = work[1], work[2], work[3], work[4], work[5], work[6]
    first, area2, euler4, level = work[7], work[8], work[9], work[10]
    level_count = np.zeros(n_delta + 1, np.int64)
    out_box = np.full((n_ck, 4), -1, np.int64)
    out_hit = np.zeros((n_ck, n_delta), np.uint8)
    out_ties = np.zeros(n_ck, np.int64)
    out_holed = np.zeros(n_ck, np.int64)
    n_comp = 0
    n_holed = 0
    best_key = -1
    best_count = 0
    best_root = -1
    for k in range(n_ck):
        for idx in range(starts[k], starts[k + 1]):
            rc = orc[idx]
            r = rc >> 16
            c = rc & 0xFFFF
            pp = (r + 1) * wp + c + 1
            m = _neighbour_code(inmask, pp, wp)
            inmask[pp] = 1
            n_parts_best = 0
            if m == 0:
                root = pp
                parent[pp] = pp
                size[pp] = 1
                bx0[pp] = c
                bx1[pp] = c + 1
                by0[pp] = r
                by1[pp] = r + 1
                first[pp] = r * w + c
                area2[pp] = 0
                euler4[pp] = 4
                n_comp += 1
                if multi:
                    lv = _match_level(c, r, c + 1, r + 1, h, w, gt, deltas, plus_one, clip)
                    level[pp] = lv
                    level_count[lv] += 1
            elif REP8[m] & (REP8[m] - 1) == 0:  # one run of set neighbours (most pixels): one part, one find
                # the general path below with n_roots = 1, written out: the pass runs ~15% faster than through it
                root = _find(parent, pp + off[LOW[REP8[m]]])
                parent[pp] = root
                size[root] += 1
                if select == SELECT_PIXELS:
                    first[root] = min(first[root], r * w + c)
                elif select == SELECT_AREA and area2[root] == best_key:
                    n_parts_best = 1
                area2[root] += DA2[m]
                if holes:
                    had_hole = euler4[root] != 4
                    euler4[root] += DE4[m]
                    n_holed += (euler4[root] != 4) - had_hole
                if c < bx0[root] or c >= bx1[root] or r < by0[root] or r >= by1[root]:
                    if multi:
                        level_count[level[root]] -= 1
                    bx0[root] = min(bx0[root], c)
                    bx1[root] = max(bx1[root], c + 1)
                    by0[root] = min(by0[root], r)
                    by1[root] = max(by1[root], r + 1)
                    if multi:
                        lv = _match_level(bx0[root], by0[root], bx1[root], by1[root], h, w, gt, deltas, plus_one, clip)
                        level[root] = lv
                        level_count[lv] += 1
            else:  # several runs: one find per run; parts are merged into root as they come
                reps = REP8[m]
                n_roots = 0
                root = -1
                while reps:
                    i = LOW[reps]
                    reps &= reps - 1
                    rq = _find(parent, pp + off[i])
                    if rq == root:
                        continue
                    # a new part: take it out of the running statistics first
                    n_roots += 1
                    if select == SELECT_AREA and area2[rq] == best_key:
                        n_parts_best += 1
                    if holes and euler4[rq] != 4:
                        n_holed -= 1
                    if n_roots == 1:
                        root = rq
                        continue
                    if multi:
                        if n_roots == 2:
                            level_count[level[root]] -= 1
                        level_count[level[rq]] -= 1
                    if size[rq] > size[root]:  # union by size
                        rq, root = root, rq
                    _link(root, rq, parent, size, bx0, by0, bx1, by1)
                    first[root] = min(first[root], first[rq])
                    area2[root] += area2[rq]
                    if holes:
                        euler4[root] += euler4[rq]
                changed = n_roots > 1 or c < bx0[root] or c >= bx1[root] or r < by0[root] or r >= by1[root]
                if multi and changed and n_roots == 1:
                    level_count[level[root]] -= 1
                parent[pp] = root
                size[root] += 1
                if select == SELECT_PIXELS:
                    first[root] = min(first[root], r * w + c)
                if changed:
                    bx0[root] = min(bx0[root], c)
                    bx1[root] = max(bx1[root], c + 1)
                    by0[root] = min(by0[root], r)
                    by1[root] = max(by1[root], r + 1)
                area2[root] += DA2[m]
                n_comp += 1 - n_roots
                if holes:
                    euler4[root] += DE4[m]
                    if euler4[root] != 4:
                        n_holed += 1
                if multi and changed:
                    lv = _match_level(bx0[root], by0[root], bx1[root], by1[root], h, w, gt, deltas, plus_one, clip)
                    level[root] = lv
                    level_count[lv] += 1
            # keys only grow when a component changes, so a running maximum stays exact
            if select == SELECT_AREA:
                key = int(area2[root])
                if key > best_key:
                    best_key = key
                    best_count = 1
                    best_root = root
                elif key == best_key:
                    best_count += 1 - n_parts_best
                    best_root = root
            elif select == SELECT_PIXELS:
                key = int(size[root]) * n_pix + (n_pix - 1 - int(first[root]))
                if key > best_key:
                    best_key = key
                    best_root = root
        if n_comp > 0:
            if select != SELECT_NONE:
                out_box[k, 0] = bx0[best_root]
                out_box[k, 1] = by0[best_root]
                out_box[k, 2] = bx1[best_root]
                out_box[k, 3] = by1[best_root]
            else:
                out_box[k, 0] = 0
        out_ties[k] = best_count
        if holes:
            out_holed[k] = n_holed
            if select != SELECT_NONE and n_comp > 0 and euler4[best_root] != 4:
                out_holed[k] -= 1
        if multi:
            above = 0
            for j in range(n_delta, 0, -1):
                above += level_count[j]
                out_hit[k, j - 1] = 1 if above > 0 else 0
    return out_box, out_hit, out_ties, out_holed


@_njit
def bg_pass(
    bucket: np.ndarray,
    h: int,
    w: int,
    n_ck: int,
    multi: bool,
    gt: np.ndarray,
    deltas: np.ndarray,
    plus_one: bool,
    clip: bool,
    work: np.ndarray,
    flags: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Shrink the background checkpoint by checkpoint (it grows as k falls); union-find over 4-connected
    background components that know whether they touch the image border (a *hole* when they do not).

    Returns ``phi`` int32 [h * w], each pixel's bucket in the *filled* masks (mask + holes + what is inside
    them = the complement of the border-connected background), and ``hit`` uint8 [K, D] (multi: some hole
    contour's box — the hole's pixel bbox grown by one pixel per side, as ``cv2.findContours(RETR_TREE)``
    reports it, clipped if ``clip`` — has IoU >= deltas[j] with a GT box).
    """
    wp = w + 2
    n_all = (h + 2) * wp
    n_delta = deltas.shape[0]
    orc = work[0]
    starts = _order(bucket, h, w, n_ck, orc)
    off = np.array([-wp - 1, -wp, -wp + 1, 1, wp + 1, wp, wp - 1, -1], np.int64)
    inbg = flags
    inbg[:n_all] = 0
    parent, size, bx0, by0, bx1, by1 = work[1], work[2], work[3], work[4], work[5], work[6]
    border, level, tail, phi_p = work[7], work[8], work[9], work[10]
    nxt = work[11]  # pixel lists of enclosed components, to stamp phi when they open
    level_count = np.zeros(n_delta + 1, np.int64)
    roots = np.empty(4, np.int64)
    out_hit = np.zeros((n_ck, n_delta), np.uint8)
    for k in range(n_ck - 1, -2, -1):
        stamp = k + 1
        for idx in range(starts[k + 1], starts[k + 2]):
            rc = orc[idx]
            r = rc >> 16
            c = rc & 0xFFFF
            pp = (r + 1) * wp + c + 1
            m = _neighbour_code(inbg, pp, wp)
            inbg[pp] = 1
            edge = r == 0 or c == 0 or r == h - 1 or c == w - 1
            reps = REP4[m]
            if reps == 0:
                parent[pp] = pp
                size[pp] = 1
                bx0[pp] = c
                bx1[pp] = c
                by0[pp] = r
                by1[pp] = r
                if edge:
                    border[pp] = 1
                    phi_p[pp] = stamp
                else:
                    border[pp] = 0
                    nxt[pp] = -1
                    tail[pp] = pp
                    if multi:
                        lv = _match_level(c - 1, r - 1, c + 2, r + 2, h, w, gt, deltas, plus_one, clip)
                        level[pp] = lv
                        level_count[lv] += 1
                continue
            n_roots = 0
            opens = edge
            while reps:
                i = LOW[reps]
                reps &= reps - 1
                rq = _find(parent, pp + off[i])
                dup = False
                for t in range(n_roots):
                    if roots[t] == rq:
                        dup = True
                if not dup:
                    roots[n_roots] = rq
                    n_roots += 1
                    if border[rq]:
                        opens = True
            root = roots[0]
            for t in range(1, n_roots):
                if size[roots[t]] > size[root]:
                    root = roots[t]
            if n_roots == 1 and border[root]:  # the common case: joins the outside
                parent[pp] = root
                size[root] += 1
                phi_p[pp] = stamp
                continue
            changed = n_roots > 1 or c < bx0[root] or c > bx1[root] or r < by0[root] or r > by1[root]
            for t in range(n_roots):
                o = roots[t]
                if not border[o]:
                    if multi and (changed or opens):
                        level_count[level[o]] -= 1
                    if opens:  # its pixels touch the border from this checkpoint down
                        q = o
                        while q >= 0:
                            phi_p[q] = stamp
                            q = nxt[q]
            for t in range(n_roots):
                o = roots[t]
                if o != root:
                    _link(root, o, parent, size, bx0, by0, bx1, by1)
                    if not opens:
                        nxt[tail[root]] = o
                        tail[root] = tail[o]
            parent[pp] = root
            size[root] += 1
            bx0[root] = min(bx0[root], c)
            bx1[root] = max(bx1[root], c)
            by0[root] = min(by0[root], r)
            by1[root] = max(by1[root], r)
            if opens:
                phi_p[pp] = stamp
                border[root] = 1
            else:
                nxt[pp] = -1
                nxt[tail[root]] = pp
                tail[root] = pp
                if multi and changed:
                    lv = _match_level(
                        bx0[root] - 1, by0[root] - 1, bx1[root] + 2, by1[root] + 2, h, w, gt, deltas, plus_one, clip
                    )
                    level[root] = lv
                    level_count[lv] += 1
        if multi and k >= 0:
            above = 0
            for j in range(n_delta, 0, -1):
                above += level_count[j]
                out_hit[k, j - 1] = 1 if above > 0 else 0
    phi = np.empty(h * w, np.int32)
    p = 0
    for r in range(h):
        for c in range(w):
            phi[p] = phi_p[(r + 1) * wp + c + 1]
            p += 1
    return phi, out_hit
