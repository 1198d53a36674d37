"""Pictures of CAMs: colour maps, heat-map overlays, labelled boxes, top-k panels and image grids.

Everything returns a numpy ``uint8`` RGB array of shape ``(H, W, 3)`` (save it with
:func:`camloc._io.atomic_save_png`). Images are accepted as PIL images (any mode; converted to RGB) or
numpy ``uint8`` arrays of shape ``(H, W, 3)`` (RGB) or ``(H, W)`` (grayscale). Maps are 2-D float arrays
(numpy or torch) with values in [0, 1]; values outside are clipped, NaN/inf are rejected.

Box convention (the project's): boxes are float ``(x0, y0, x1, y1)`` in continuous pixel coordinates of
the image they are drawn on; pixel column j covers [j, j+1). :func:`draw_boxes` rounds the corners to
the nearest integer and outlines pixel columns ``x0 .. x1 - 1`` and rows ``y0 .. y1 - 1`` (the pixels the
box covers), with the line growing inwards, so a box never paints outside itself. Boxes with zero area
are skipped.

Drawing on huge images: pass ``max_side`` and the image is first reduced (aspect kept, boxes scaled with
it) so the output's longer side is at most ``max_side``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont

from camloc._checks import check_choice, check_number, fail

__all__ = [
    "CMAPS",
    "colorize",
    "draw_boxes",
    "image_grid",
    "overlay",
    "topk_panel",
]

#: Colour maps :func:`colorize` knows (OpenCV's tables; "jet" is the CAM paper's look).
CMAPS: dict[str, int | None] = {
    "jet": cv2.COLORMAP_JET,
    "gray": None,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "turbo": cv2.COLORMAP_TURBO,
    "hot": cv2.COLORMAP_HOT,
}

#: Colours used for boxes when none are given (box i gets ``DEFAULT_COLORS[i % len]``).
DEFAULT_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 200, 0),
    (30, 100, 255),
    (255, 200, 0),
    (255, 0, 255),
    (0, 220, 220),
    (255, 128, 0),
    (140, 70, 255),
)

Color = str | tuple[int, int, int]


# --------------------------------------------------------------------------------------------- inputs
def _to_rgb_array(name: str, image: Any) -> np.ndarray:
    """PIL image / uint8 (H, W) / uint8 (H, W, 3) -> contiguous uint8 (H, W, 3) (a copy when needed)."""
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            fail(name, "a non-empty image", f"size {image.size}")
        return np.asarray(image.convert("RGB") if image.mode != "RGB" else image).copy()
    if not isinstance(image, np.ndarray):
        fail(name, "a PIL.Image or a numpy uint8 array of shape (H, W, 3)", image, type_error=True)
    if image.dtype != np.uint8:
        fail(name, "a numpy array of dtype uint8", f"dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        fail(name, "a uint8 array of shape (H, W, 3) or (H, W)", f"shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        fail(name, "a non-empty image", f"shape {image.shape}")
    return np.ascontiguousarray(image)


def _to_float_array(name: str, x: Any, ndim: int) -> np.ndarray:
    """numpy / torch / nested sequence -> float32 numpy array of rank ``ndim``, finite, clipped to [0, 1]."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().float().numpy()
    if isinstance(x, (Image.Image, str, bytes)):
        fail(name, f"a {ndim}-D float array", x, type_error=True)
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        fail(name, f"a {ndim}-D float array", x, type_error=True)
    if arr.ndim != ndim:
        fail(name, f"a {ndim}-D array", f"shape {arr.shape}")
    if arr.size == 0 or 0 in arr.shape:
        fail(name, "a non-empty array", f"shape {arr.shape}")
    if not np.isfinite(arr).all():
        fail(name, "finite (no NaN or inf values)", "an array with NaN/inf values")
    return np.clip(arr, 0.0, 1.0)


def _to_boxes(name: str, boxes: Any) -> np.ndarray:
    if hasattr(boxes, "detach") and hasattr(boxes, "cpu"):
        boxes = boxes.detach().cpu().double().numpy()
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        fail(name, "an array of shape (N, 4)", boxes, type_error=True)
    if arr.ndim == 1 and arr.shape[0] == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        fail(name, "an array of shape (N, 4) (xyxy)", f"shape {arr.shape}")
    if not np.isfinite(arr).all():
        fail(name, "finite (no NaN or inf values)", "an array with NaN/inf values")
    return arr


def _parse_color(name: str, c: Any) -> tuple[int, int, int]:
    if isinstance(c, str):
        try:
            rgb = ImageColor.getrgb(c)
        except ValueError:
            fail(name, "a colour name, '#rrggbb' or an (r, g, b) tuple", c)
        return int(rgb[0]), int(rgb[1]), int(rgb[2])
    if (
        isinstance(c, (tuple, list, np.ndarray))
        and len(c) == 3
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
    ):
        return int(c[0]), int(c[1]), int(c[2])
    fail(name, "a colour name, '#rrggbb' or an (r, g, b) tuple of ints in 0..255", c)
    raise AssertionError  # unreachable: fail() raises


def _colors_for(name: str, colors: Any, n: int) -> list[tuple[int, int, int]]:
    if colors is None:
        return [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(n)]
    if isinstance(colors, str) or (
        isinstance(colors, tuple) and len(colors) == 3 and all(isinstance(v, int) for v in colors)
    ):
        return [_parse_color(name, colors)] * n
    if not isinstance(colors, Sequence):
        fail(name, "a colour or a sequence of colours", colors, type_error=True)
    if len(colors) != n:
        fail(name, f"one colour per box ({n})", f"{len(colors)} colours")
    return [_parse_color(f"{name}[{i}]", c) for i, c in enumerate(colors)]


def _check_max_side(max_side: int | None) -> None:
    if max_side is not None:
        check_number("max_side", max_side, low=1, integer=True)


def _fit(arr: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float, float]:
    """Reduce ``arr`` so its longer side is <= max_side; return it and the (x, y) factors applied."""
    h, w = arr.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return arr, 1.0, 1.0
    f = max_side / max(h, w)
    nw, nh = max(1, min(max_side, round(w * f))), max(1, min(max_side, round(h * f)))
    out = cv2.resize(arr, (nw, nh), interpolation=cv2.INTER_AREA)
    return out, nw / w, nh / h


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


@lru_cache(maxsize=1024)
def _text_size(text: str, font: Any) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of ``text`` drawn at the origin in ``font``."""
    x0, y0, x1, y1 = _MEASURE.textbbox((0, 0), text, font=font)
    return math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)


_MEASURE = ImageDraw.Draw(Image.new("RGB", (1, 1)))


def _text_color(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    luma = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    return (0, 0, 0) if luma >= 140 else (255, 255, 255)


# ---------------------------------------------------------------------------------------- colour maps
def colorize(map: Any, *, cmap: str = "jet") -> np.ndarray:
    """Colour a 2-D map with values in [0, 1] (float (h, w)) -> uint8 RGB (h, w, 3).

    Values are quantised as ``round(v * 255)`` and looked up in OpenCV's table for ``cmap`` (one of
    :data:`CMAPS`). With "jet", 0 is dark blue (0, 0, 128) and 1 is dark red (128, 0, 0).
    """
    check_choice("cmap", cmap, tuple(CMAPS))
    return _colorize(_to_float_array("map", map, 2), cmap)


@lru_cache(maxsize=16)
def _rgb_table(cmap: str) -> np.ndarray:
    """OpenCV's colour table for ``cmap`` (not "gray") in RGB order, ``uint8 (256, 1, 3)``, for ``applyColorMap``."""
    code = CMAPS[cmap]
    assert code is not None
    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), code)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _colorize(m: np.ndarray, cmap: str) -> np.ndarray:
    """:func:`colorize` of a checked float32 map in [0, 1]."""
    u8 = np.rint(m * 255.0).astype(np.uint8)
    if CMAPS[cmap] is None:
        return np.repeat(u8[:, :, None], 3, axis=2)
    return cv2.applyColorMap(u8, _rgb_table(cmap))  # the table is RGB already: no channel swap afterwards


def _resize_map(m: np.ndarray, w: int, h: int) -> np.ndarray:
    """Bilinear resize of a float map to (h, w), half-pixel aligned (pixel centres at j + 0.5)."""
    if m.shape == (h, w):
        return m
    return np.clip(cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def _blend(img: np.ndarray, heat: np.ndarray, alpha: float) -> np.ndarray:
    if alpha == 0.0:
        return img.copy()
    if alpha == 1.0:
        return heat.copy()
    # OpenCV's saturating weighted sum: (1 - alpha) * img + alpha * heat, rounded (several times faster than numpy)
    return cv2.addWeighted(img, 1.0 - alpha, heat, alpha, 0.0)


def overlay(
    image: Any,
    map: Any,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
    max_side: int | None = None,
) -> np.ndarray:
    """Blend a coloured map over an image -> uint8 (H, W, 3).

    ``map`` (float (h, w) in [0, 1], any size) is resized bilinearly to the image (half-pixel aligned,
    so it stretches over the image's extent exactly), coloured with ``cmap`` and blended as
    ``(1 - alpha) * image + alpha * colours``: ``alpha=0`` returns the image, ``alpha=1`` the colours.
    """
    check_number("alpha", alpha, low=0.0, high=1.0)
    check_choice("cmap", cmap, tuple(CMAPS))
    _check_max_side(max_side)
    img, _, _ = _fit(_to_rgb_array("image", image), max_side)
    m = _to_float_array("map", map, 2)
    h, w = img.shape[:2]
    heat = _colorize(_resize_map(m, w, h), cmap)
    return _blend(img, heat, float(alpha))


# --------------------------------------------------------------------------------------------- boxes
def _default_width(h: int, w: int) -> int:
    return max(1, round(max(h, w) / 250))


def _default_font_size(h: int, w: int) -> int:
    return max(10, round(max(h, w) / 40))


def _draw_label(
    out: np.ndarray,
    text: str,
    anchor_x: int,
    anchor_y_top: int,
    anchor_y_inside: int,
    color: tuple[int, int, int],
    font: Any,
) -> None:
    """Draw ``text`` (in place) on a filled ``color`` background just above (or, if no room, inside) a box corner.

    Text too wide for the image is cut (ending in "..."); text too tall for it is not drawn. Only the label's own
    rectangle goes through PIL.
    """
    img_h, img_w = out.shape[:2]
    pad = 2
    left, top, right, bottom = _text_size(text, font)
    if bottom - top + 2 * pad > img_h:
        return
    t = text
    while right - left + 2 * pad > img_w:
        if len(t) <= 1:
            return
        t = t[:-1]
        left, top, right, bottom = _text_size(t + "...", font)
    if t != text:
        text = t + "..."
    tw, th = right - left + 2 * pad, bottom - top + 2 * pad
    y = anchor_y_top - th if anchor_y_top - th >= 0 else anchor_y_inside
    x = min(max(anchor_x, 0), max(img_w - tw, 0))
    y = min(max(y, 0), max(img_h - th, 0))
    label = Image.new("RGB", (tw, th), color)
    ImageDraw.Draw(label).text((pad - left, pad - top), text, fill=_text_color(color), font=font)
    out[y : y + th, x : x + tw] = np.asarray(label)[: img_h - y, : img_w - x]


def draw_boxes(
    image: Any,
    boxes: Any,
    *,
    labels: Sequence[str] | None = None,
    colors: Color | Sequence[Color] | None = None,
    width: int | None = None,
    font_size: int | None = None,
    max_side: int | None = None,
) -> np.ndarray:
    """Outline boxes (float (N, 4) xyxy, in ``image``'s pixels) with optional labels -> uint8 (H, W, 3).

    A box's corners are rounded to integers and it outlines pixel columns ``x0 .. x1 - 1`` and rows
    ``y0 .. y1 - 1``; lines are ``width`` pixels wide (default: scaled to the image, >= 1), growing
    inwards; parts outside the image are clipped; boxes of zero area are skipped. ``labels[i]`` is drawn
    in the default PIL font on a filled background of the box's colour, above the box's top-left corner
    (inside the box when there is no room above), shifted to stay inside the image (cut with "..." when
    wider than the image, left out when taller). ``colors`` is one
    colour (name, "#rrggbb" or (r, g, b)) for all boxes or one per box; default: a fixed palette.
    With ``max_side`` the image (and the boxes) are reduced first so the output fits in ``max_side``.
    """
    _check_max_side(max_side)
    img, fx, fy = _fit(_to_rgb_array("image", image), max_side)
    b = _to_boxes("boxes", boxes)
    n = b.shape[0]
    if labels is not None:
        if isinstance(labels, str) or not isinstance(labels, Sequence):
            fail("labels", "a sequence of str (one per box) or None", labels, type_error=True)
        if len(labels) != n:
            fail("labels", f"one label per box ({n})", f"{len(labels)} labels")
    cols = _colors_for("colors", colors, n)
    h, w = img.shape[:2]
    if width is not None:
        check_number("width", width, low=1, integer=True)
    if font_size is not None:
        check_number("font_size", font_size, low=1, integer=True)
    lw = width if width is not None else _default_width(h, w)
    font = _font(font_size if font_size is not None else _default_font_size(h, w))

    # _fit / _to_rgb_array hand back the caller's own array when it needs no change: never draw on that
    out = img.copy() if isinstance(image, np.ndarray) and np.may_share_memory(img, image) else img
    drawn: list[tuple[int, int, int]] = []
    for i in range(n):
        x0, y0, x1, y1 = b[i, 0] * fx, b[i, 1] * fy, b[i, 2] * fx, b[i, 3] * fy
        if (x1 - x0) <= 0 or (y1 - y0) <= 0:
            continue
        c0, r0 = math.floor(x0 + 0.5), math.floor(y0 + 0.5)
        c1, r1 = math.floor(x1 + 0.5), math.floor(y1 + 0.5)
        c0, c1 = max(c0, 0), min(c1, w)
        r0, r1 = max(r0, 0), min(r1, h)
        if c1 <= c0 or r1 <= r0:  # rounds to nothing, or entirely outside the image
            continue
        _outline_box(out, c0, r0, c1, r1, lw, cols[i])
        drawn.append((i, c0, r0))
    if labels is not None:  # labels last, so no box line crosses a label
        for i, c0, r0 in drawn:
            if labels[i]:
                _draw_label(out, str(labels[i]), c0, r0, r0 + lw, cols[i], font)
    return out


def _outline_box(out: np.ndarray, c0: int, r0: int, c1: int, r1: int, lw: int, color: tuple[int, int, int]) -> None:
    """Paint (in place) the ``lw``-pixel frame just inside columns ``c0 .. c1 - 1`` and rows ``r0 .. r1 - 1``."""
    top, bottom = min(r0 + lw, r1), max(r1 - lw, r0)
    left, right = min(c0 + lw, c1), max(c1 - lw, c0)
    out[r0:top, c0:c1] = color
    out[bottom:r1, c0:c1] = color
    out[r0:r1, c0:left] = color
    out[r0:r1, right:c1] = color


# ------------------------------------------------------------------------------------- panels, grids
def _caption_strip(width: int, text: str, font: Any, height: int) -> np.ndarray:
    """White strip (height, width, 3) with ``text`` in black, centred, cut with "..." to fit."""
    pil = Image.new("RGB", (width, height), (255, 255, 255))
    if text:
        draw = ImageDraw.Draw(pil)
        t = text
        left, top, right, bottom = _text_size(t, font)
        while right - left > width - 4 and len(t) > 1:
            t = t[:-1]
            left, top, right, bottom = _text_size(t + "...", font)
        if t != text:
            t += "..."
        x = max((width - (right - left)) // 2, 0) - left
        y = max((height - (bottom - top)) // 2, 0) - top
        draw.text((x, y), t, fill=(0, 0, 0), font=font)
    return np.asarray(pil)


def image_grid(
    images: Sequence[Any],
    *,
    ncols: int,
    captions: Sequence[str] | None = None,
    pad: int = 4,
    max_side: int | None = None,
    font_size: int | None = None,
    background: Color = (255, 255, 255),
) -> np.ndarray:
    """Arrange images in a grid, row by row -> uint8 RGB.

    Every cell is as large as the largest image (after reducing each to ``max_side`` if given); images
    are centred in their cells, cells are ``pad`` pixels apart (and from the border). With ``captions``
    (one str per image) a caption strip is added under each cell. ``ncols`` larger than the number of
    images is reduced to it.
    """
    if isinstance(images, (np.ndarray, Image.Image)) or not isinstance(images, Sequence):
        fail("images", "a sequence of images", images, type_error=True)
    if len(images) == 0:
        fail("images", "a non-empty sequence of images", "an empty sequence")
    check_number("ncols", ncols, low=1, integer=True)
    check_number("pad", pad, low=0, integer=True)
    _check_max_side(max_side)
    if font_size is not None:
        check_number("font_size", font_size, low=1, integer=True)
    if captions is not None:
        if isinstance(captions, str) or not isinstance(captions, Sequence):
            fail("captions", "a sequence of str (one per image) or None", captions, type_error=True)
        if len(captions) != len(images):
            fail("captions", f"one caption per image ({len(images)})", f"{len(captions)} captions")
    bg = _parse_color("background", background)
    arrs = [_fit(_to_rgb_array(f"images[{i}]", im), max_side)[0] for i, im in enumerate(images)]
    cell_h = max(a.shape[0] for a in arrs)
    cell_w = max(a.shape[1] for a in arrs)
    cap_h = 0
    font = None
    if captions is not None:
        fs = font_size if font_size is not None else max(10, min(24, round(cell_w / 14)))
        font = _font(fs)
        cap_h = fs + 6
    n = len(arrs)
    cols = min(ncols, n)
    rows = -(-n // cols)
    out_h = rows * (cell_h + cap_h) + (rows + 1) * pad
    out_w = cols * cell_w + (cols + 1) * pad
    out = np.empty((out_h, out_w, 3), np.uint8)
    if bg[0] == bg[1] == bg[2]:
        out.fill(bg[0])  # a plain memset, much faster than broadcasting the colour
    else:
        out[:] = bg
    for k, a in enumerate(arrs):
        r, c = divmod(k, cols)
        top = pad + r * (cell_h + cap_h + pad)
        left = pad + c * (cell_w + pad)
        ah, aw = a.shape[:2]
        oy, ox = top + (cell_h - ah) // 2, left + (cell_w - aw) // 2
        out[oy : oy + ah, ox : ox + aw] = a
        if captions is not None and cap_h > 0:
            out[top + cell_h : top + cell_h + cap_h, left : left + cell_w] = _caption_strip(
                cell_w, str(captions[k]), font, cap_h
            )
    return out


def topk_panel(
    image: Any,
    maps: Any,
    boxes: Any,
    labels: Sequence[str],
    *,
    scores: Sequence[float] | None = None,
    tile_size: int = 224,
    alpha: float = 0.5,
    cmap: str = "jet",
    ncols: int | None = None,
    pad: int = 4,
    box_color: Color = (255, 255, 255),
    title: str = "",
) -> np.ndarray:
    """The CAM paper's top-k figure -> uint8 RGB: the image, then one overlay + box per class.

    Args:
        image: the input image (PIL or uint8 (H, W, 3)).
        maps: float (k, h, w) in [0, 1], one CAM per class (any resolution; stretched over the image).
        boxes: float (k, 4) xyxy in ``image``'s pixels, one per class (zero-area boxes are not drawn).
        labels: k class names. Captions read ``"name 0.87"`` when ``scores`` (k floats) is given.
        tile_size: each tile is the image resized so that its longer side is ``tile_size``.
        ncols: tiles per row (default: all k + 1 in one row).
        title: caption of the first (plain image) tile.
    """
    check_number("tile_size", tile_size, low=1, integer=True)
    check_number("alpha", alpha, low=0.0, high=1.0)
    check_choice("cmap", cmap, tuple(CMAPS))
    m = _to_float_array("maps", maps, 3)
    k = m.shape[0]
    b = _to_boxes("boxes", boxes)
    if b.shape[0] != k:
        fail("boxes", f"one box per map ({k})", f"shape {b.shape}")
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        fail("labels", "a sequence of str (one per map)", labels, type_error=True)
    if len(labels) != k:
        fail("labels", f"one label per map ({k})", f"{len(labels)} labels")
    if scores is not None:
        if not isinstance(scores, Sequence) and not isinstance(scores, np.ndarray):
            fail("scores", "a sequence of floats (one per map) or None", scores, type_error=True)
        if len(scores) != k:
            fail("scores", f"one score per map ({k})", f"{len(scores)} scores")
    if ncols is not None:
        check_number("ncols", ncols, low=1, integer=True)
    color = _parse_color("box_color", box_color)

    img = _to_rgb_array("image", image)
    h, w = img.shape[:2]
    f = tile_size / max(h, w)
    tw, th = max(1, round(w * f)), max(1, round(h * f))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    tile = cv2.resize(img, (tw, th), interpolation=interp) if (tw, th) != (w, h) else img.copy()
    sx, sy = tw / w, th / h
    tiles = [tile]
    captions = [title]
    lw = _default_width(th, tw)
    for i in range(k):
        # overlay() + draw_boxes() of one tile, without re-checking the inputs checked above
        ov = _blend(tile, _colorize(_resize_map(m[i], tw, th), cmap), float(alpha))
        x0, y0, x1, y1 = (float(v) for v in b[i] * np.array([sx, sy, sx, sy]))
        c0, r0 = max(math.floor(x0 + 0.5), 0), max(math.floor(y0 + 0.5), 0)
        c1, r1 = min(math.floor(x1 + 0.5), tw), min(math.floor(y1 + 0.5), th)
        if x1 > x0 and y1 > y0 and c1 > c0 and r1 > r0:
            _outline_box(ov, c0, r0, c1, r1, lw, color)
        tiles.append(ov)
        name = str(labels[i])
        captions.append(f"{name} {float(scores[i]):.2f}" if scores is not None else name)
    return image_grid(tiles, ncols=ncols if ncols is not None else k + 1, captions=captions, pad=pad)
