"""viz: exact box pixels, colour maps, overlays, top-k panels and grids.

Box drawing convention under test: box (x0, y0, x1, y1) outlines pixel columns x0 .. x1 - 1 and rows
y0 .. y1 - 1 (the pixels it covers), lines growing inwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from camloc.errors import CamlocTypeError, CamlocValueError
from camloc.viz import colorize, draw_boxes, image_grid, overlay, topk_panel

RED = (255, 0, 0)


def _outline(h: int, w: int, c0: int, r0: int, c1: int, r1: int, width: int = 1) -> np.ndarray:
    """Reference mask: a ``width``-pixel frame just inside columns c0..c1-1 and rows r0..r1-1."""
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    inner = np.zeros((h, w), bool)
    inner[r0 + width : r1 - width, c0 + width : c1 - width] = True
    return m & ~inner


# ---------------------------------------------------------------------------------------- draw_boxes


def test_one_pixel_box_at_exact_pixels() -> None:
    img = np.zeros((10, 12, 3), np.uint8)
    out = draw_boxes(img, np.array([[2.0, 3.0, 6.0, 8.0]]), colors=RED, width=1)
    want = np.zeros((10, 12), bool)
    want[3, 2:6] = want[7, 2:6] = True  # rows y0 and y1 - 1
    want[3:8, 2] = want[3:8, 5] = True  # columns x0 and x1 - 1
    np.testing.assert_array_equal(np.all(out == RED, axis=2), want)
    np.testing.assert_array_equal(out[~want], 0)  # nothing else touched
    assert img.max() == 0  # input not modified


def test_box_width_grows_inwards_and_float_corners_round() -> None:
    img = np.zeros((20, 20, 3), np.uint8)
    out = draw_boxes(img, [[1.6, 2.4, 15.5, 17.49]], colors="#ff0000", width=3)
    # corners round to (2, 2, 16, 17)
    np.testing.assert_array_equal(np.all(out == RED, axis=2), _outline(20, 20, 2, 2, 16, 17, width=3))


def test_thin_box_with_wide_line_stays_inside_itself() -> None:
    # a box thinner than twice the line width is filled, never painted beyond its own rows and columns
    img = np.zeros((40, 40, 3), np.uint8)
    out = draw_boxes(img, [[5, 5, 20, 7], [30, 10, 31, 30]], colors=RED, width=3)
    want = np.zeros((40, 40), bool)
    want[5:7, 5:20] = True  # rows 5..6 only (the PIL outline used to spill onto rows 4 and 7)
    want[10:30, 30] = True
    np.testing.assert_array_equal(np.all(out == RED, axis=2), want)
    np.testing.assert_array_equal(out[~want], 0)


def test_labels_leave_the_input_untouched_and_match_a_plain_pil_drawing() -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    keep = img.copy()
    out = draw_boxes(img, [[20.0, 30.0, 70.0, 58.0]], labels=["tabby 0.91"], colors=(0, 200, 0), width=2)
    np.testing.assert_array_equal(img, keep)
    # reference: the label box and text drawn with PIL on the whole image (what draw_boxes did before it drew
    # only the label's own rectangle through PIL)
    from PIL import ImageDraw, ImageFont

    ref = Image.fromarray(draw_boxes(img, [[20.0, 30.0, 70.0, 58.0]], colors=(0, 200, 0), width=2))
    font = ImageFont.load_default(size=10)
    d = ImageDraw.Draw(ref)
    left, top, right, bottom = d.textbbox((0, 0), "tabby 0.91", font=font)
    tw, th = right - left + 4, bottom - top + 4
    d.rectangle([20, 30 - th, 20 + tw - 1, 29], fill=(0, 200, 0))
    d.text((22 - left, 30 - th + 2 - top), "tabby 0.91", fill=(255, 255, 255), font=font)  # white on dark green
    np.testing.assert_array_equal(out, np.asarray(ref))


def test_boxes_clipped_skipped_and_colored() -> None:
    img = np.full((10, 10, 3), 7, np.uint8)
    # zero-area, inverted and fully outside boxes draw nothing
    out = draw_boxes(img, [[3, 3, 3, 8], [5, 5, 2, 2], [20, 20, 30, 30], [-5, -5, -1, -1]], width=1)
    np.testing.assert_array_equal(out, img)
    out = draw_boxes(img, np.zeros((0, 4)))
    np.testing.assert_array_equal(out, img)
    # partly outside: clipped to the image, the visible sides drawn at the border
    out = draw_boxes(img, torch.tensor([[-4.0, 2.0, 5.0, 30.0]]), colors=[(0, 0, 255)], width=1)
    np.testing.assert_array_equal(np.all(out == (0, 0, 255), axis=2), _outline(10, 10, 0, 2, 5, 10))
    # per-box colours
    out = draw_boxes(img, [[0, 0, 4, 4], [5, 5, 10, 10]], colors=["red", (0, 255, 0)], width=1)
    np.testing.assert_array_equal(np.all(out == RED, axis=2), _outline(10, 10, 0, 0, 4, 4))
    np.testing.assert_array_equal(np.all(out == (0, 255, 0), axis=2), _outline(10, 10, 5, 5, 10, 10))


def test_labels_on_filled_background_inside_image() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    box = [150.0, 50.0, 190.0, 90.0]
    out = draw_boxes(img, [box], labels=["cat"], colors=RED, width=1)
    red = np.all(out == RED, axis=2)
    above = red[:50]
    assert above.sum() > 50  # the filled label sits above the box
    rows, cols = np.nonzero(above)
    assert rows.max() == 49 and cols.min() == 150  # touching the box's top-left corner
    assert (out[:50] != 0).any(axis=2).sum() > above.sum()  # and carries text in another colour

    # box at the top-right corner with a long label: shifted left to stay inside, drawn inside the box
    out = draw_boxes(img, [[180.0, 0.0, 200.0, 30.0]], labels=["a longer label"], colors=RED, width=1)
    red = np.all(out == RED, axis=2)
    assert red[:, :180].any()  # moved left of the box to fit
    assert red[1:20, 199].any()  # reaches the right border but no further (the array is 200 wide)
    assert not red[40:].any()


def test_label_cut_or_dropped_on_tiny_images() -> None:
    tiny = np.zeros((8, 8, 3), np.uint8)
    out = draw_boxes(tiny, [[1, 1, 5, 5]], labels=["dog"], colors=RED, width=1)
    # text is taller than the image: only the box is drawn
    np.testing.assert_array_equal(np.all(out == RED, axis=2), _outline(8, 8, 1, 1, 5, 5))
    small = np.zeros((40, 30, 3), np.uint8)
    out = draw_boxes(small, [[2, 20, 10, 30]], labels=["a very long class name"], colors=RED, width=1)
    assert out.shape == (40, 30, 3) and np.all(out == RED, axis=2)[:20].any()


def test_draw_boxes_max_side_scales_image_and_boxes() -> None:
    big = np.zeros((2000, 3000, 3), np.uint8)
    out = draw_boxes(big, [[0.0, 0.0, 1500.0, 1000.0]], colors=RED, width=1, max_side=300)
    assert out.shape == (200, 300, 3)
    np.testing.assert_array_equal(np.all(out == RED, axis=2), _outline(200, 300, 0, 0, 150, 100))


def test_draw_boxes_accepts_pil_and_gray() -> None:
    out = draw_boxes(Image.new("L", (6, 4), 9), [[0, 0, 6, 4]], colors=RED, width=1)
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    assert out[1, 1].tolist() == [9, 9, 9] and out[0, 0].tolist() == list(RED)
    out2 = draw_boxes(np.full((4, 6), 9, np.uint8), [[0, 0, 6, 4]], colors=RED, width=1)
    np.testing.assert_array_equal(out, out2)


def test_draw_boxes_errors() -> None:
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(CamlocValueError, match=r"`boxes` must be an array of shape \(N, 4\)"):
        draw_boxes(img, [[1, 2, 3]])
    with pytest.raises(CamlocValueError, match="`boxes` must be finite"):
        draw_boxes(img, [[0, 0, np.nan, 3]])
    with pytest.raises(CamlocValueError, match=r"`labels` must be one label per box \(1\)"):
        draw_boxes(img, [[0, 0, 3, 3]], labels=["a", "b"])
    with pytest.raises(CamlocValueError, match=r"`colors\[0\]` must be a colour"):
        draw_boxes(img, [[0, 0, 3, 3]], colors=[(300, 0, 0)])
    with pytest.raises(CamlocValueError, match="`image` must be a numpy array of dtype uint8"):
        draw_boxes(img.astype(np.float32), [[0, 0, 3, 3]])
    with pytest.raises(CamlocTypeError, match=r"`image` must be a PIL\.Image"):
        draw_boxes([[0]], [[0, 0, 3, 3]])
    with pytest.raises(CamlocValueError, match="`width` must be >= 1"):
        draw_boxes(img, [[0, 0, 3, 3]], width=0)


# ------------------------------------------------------------------------------------ colour, overlay


def test_jet_endpoints_and_gray() -> None:
    m = np.array([[0.0, 1.0, 0.5]])
    c = colorize(m)
    assert c.shape == (1, 3, 3) and c.dtype == np.uint8
    assert c[0, 0].tolist() == [0, 0, 128]  # dark blue
    assert c[0, 1].tolist() == [128, 0, 0]  # dark red
    assert c[0, 2, 1] > 200 and c[0, 2, 0] < c[0, 2, 1] and c[0, 2, 2] < c[0, 2, 1]  # green-ish middle
    g = colorize(np.array([[0.0, 0.2, 1.0, -0.5, 1.5]]), cmap="gray")  # out-of-range values clipped
    np.testing.assert_array_equal(g[0, :, 0], [0, 51, 255, 0, 255])
    np.testing.assert_array_equal(g[..., 0], g[..., 2])
    np.testing.assert_array_equal(colorize(torch.tensor([[0.0, 1.0]])), c[:, :2])
    for name in ("viridis", "inferno", "turbo"):
        assert colorize(m, cmap=name).shape == (1, 3, 3)


def test_colorize_errors() -> None:
    with pytest.raises(CamlocValueError, match="`cmap` must be one of 'jet'"):
        colorize(np.zeros((2, 2)), cmap="nope")
    with pytest.raises(CamlocValueError, match="`map` must be a 2-D array"):
        colorize(np.zeros((2, 2, 2)))
    with pytest.raises(CamlocValueError, match="`map` must be finite"):
        colorize(np.array([[np.inf]]))


def test_overlay_alpha_endpoints_and_blend() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    m = rng.random((6, 8))
    np.testing.assert_array_equal(overlay(img, m, alpha=0.0), img)
    np.testing.assert_array_equal(overlay(img, m, alpha=1.0), colorize(m))
    half = overlay(img, m, alpha=0.5, cmap="gray")
    want = np.rint(0.5 * img + 0.5 * np.rint(m * 255)[:, :, None])
    np.testing.assert_array_equal(half, want)


def test_overlay_resizes_map_bilinearly_half_pixel() -> None:
    img = np.zeros((3, 4, 3), np.uint8)
    m = np.array([[0.0, 1.0]])  # 1 x 2 map stretched over a 3 x 4 image
    out = overlay(img, m, alpha=1.0, cmap="gray")
    # pixel centres 0.5, 1.5, 2.5, 3.5 sample the map at 0.25 .. 1.75 in map pixels -> 0, .25, .75, 1
    for row in out[..., 0]:
        np.testing.assert_array_equal(row, [0, 64, 191, 255])
    const = overlay(img, np.ones((1, 1)), alpha=1.0)
    assert (const == [128, 0, 0]).all()


def test_overlay_max_side_and_errors() -> None:
    big = np.zeros((1000, 500, 3), np.uint8)
    assert overlay(big, np.zeros((7, 7)), max_side=100).shape == (100, 50, 3)
    with pytest.raises(CamlocValueError, match="`alpha` must be <= 1"):
        overlay(big, np.zeros((7, 7)), alpha=1.5)


# ---------------------------------------------------------------------------------- panels and grids


def test_topk_panel_layout_boxes_and_captions() -> None:
    img = np.zeros((32, 64, 3), np.uint8)  # 64 wide: tile_size 64 keeps it at scale 1
    maps = np.zeros((3, 7, 7))
    boxes = np.array([[0.0, 0.0, 32.0, 16.0], [10.0, 10.0, 10.0, 20.0], [4.0, 4.0, 60.0, 28.0]])
    pad = 4
    out = topk_panel(
        img, maps, boxes, ["cat", "dog", "tiger"], scores=[0.87, 0.1, 0.03], tile_size=64, alpha=0.0, pad=pad
    )
    assert out.dtype == np.uint8 and out.shape[1] == 4 * 64 + 5 * pad
    cap_h = out.shape[0] - 32 - 2 * pad
    assert cap_h > 8
    tiles = [out[pad : pad + 32, pad + t * (64 + pad) : pad + t * (64 + pad) + 64] for t in range(4)]
    np.testing.assert_array_equal(tiles[0], img)  # first tile: the plain image
    white = np.all(tiles[1] == 255, axis=2)
    np.testing.assert_array_equal(white, _outline(32, 64, 0, 0, 32, 16))  # box 0 drawn in tile 1
    np.testing.assert_array_equal(tiles[2], img)  # zero-area box: nothing drawn
    assert np.all(tiles[3] == 255, axis=2).sum() == _outline(32, 64, 4, 4, 60, 28).sum()
    captions = [out[pad + 32 : pad + 32 + cap_h, pad + t * (64 + pad) : pad + t * (64 + pad) + 64] for t in range(4)]
    assert (captions[0] == 255).all()  # no title
    for c in captions[1:]:
        assert (c < 128).any()  # dark text on white

    grid = topk_panel(img, torch.rand(3, 7, 7), boxes, ["a", "b", "c"], tile_size=32, ncols=2)
    assert grid.shape[1] == 2 * 32 + 3 * 4  # 2 columns, 2 rows
    assert grid.shape[0] > 2 * (16 + 4)


def test_topk_panel_tiles_are_overlay_plus_draw_boxes() -> None:
    # the panel's fast path builds each tile exactly as overlay() followed by draw_boxes() would
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    maps = rng.random((2, 7, 7))
    boxes = np.array([[3.2, 4.7, 60.1, 44.4], [-10.0, 20.0, 30.0, 80.0]])
    out = topk_panel(img, maps, boxes, ["a", "b"], tile_size=70, pad=0, alpha=0.4, cmap="turbo")
    for i in range(2):
        want = draw_boxes(overlay(img, maps[i], alpha=0.4, cmap="turbo"), boxes[i : i + 1], colors=(255, 255, 255))
        np.testing.assert_array_equal(out[:50, 70 * (i + 1) : 70 * (i + 2)], want)


def test_topk_panel_errors() -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(CamlocValueError, match=r"`boxes` must be one box per map \(2\)"):
        topk_panel(img, np.zeros((2, 4, 4)), np.zeros((3, 4)), ["a", "b"])
    with pytest.raises(CamlocValueError, match=r"`labels` must be one label per map \(2\)"):
        topk_panel(img, np.zeros((2, 4, 4)), np.zeros((2, 4)), ["a"])
    with pytest.raises(CamlocValueError, match="`maps` must be a 3-D array"):
        topk_panel(img, np.zeros((4, 4)), np.zeros((1, 4)), ["a"])


def test_image_grid_layout() -> None:
    a = np.full((10, 20, 3), 50, np.uint8)
    b = np.full((30, 10, 3), 100, np.uint8)
    c = Image.new("RGB", (4, 4), (0, 0, 200))
    pad = 2
    out = image_grid([a, b, c], ncols=2, pad=pad)
    # cells 30 high x 20 wide; 2 rows, 2 columns
    assert out.shape == (2 * 30 + 3 * pad, 2 * 20 + 3 * pad, 3)
    np.testing.assert_array_equal(out[pad + 10 : pad + 20, pad : pad + 20], a)  # centred vertically
    np.testing.assert_array_equal(out[pad : pad + 30, pad + 20 + pad + 5 : pad + 20 + pad + 15], b)
    r0, c0 = pad + 30 + pad + 13, pad + 8
    np.testing.assert_array_equal(out[r0 : r0 + 4, c0 : c0 + 4], np.asarray(c))
    assert (out[0] == 255).all() and (out[:, -1] == 255).all()  # white padding and empty cell
    assert image_grid([a], ncols=5, pad=0).shape == (10, 20, 3)  # ncols capped at the image count
    with_caps = image_grid([a, b, c], ncols=3, captions=["x", "y", "z"], pad=pad)
    assert with_caps.shape[0] > 30 + 2 * pad and with_caps.shape[1] == 3 * 20 + 4 * pad
    assert image_grid([np.zeros((400, 200, 3), np.uint8)], ncols=1, max_side=50, pad=0).shape == (50, 25, 3)


def test_image_grid_errors() -> None:
    with pytest.raises(CamlocValueError, match="`images` must be a non-empty sequence"):
        image_grid([], ncols=2)
    with pytest.raises(CamlocValueError, match=r"`captions` must be one caption per image \(1\)"):
        image_grid([np.zeros((2, 2, 3), np.uint8)], ncols=1, captions=["a", "b"])
    with pytest.raises(CamlocValueError, match="`ncols` must be >= 1"):
        image_grid([np.zeros((2, 2, 3), np.uint8)], ncols=0)


def test_import_does_not_load_matplotlib() -> None:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = "import sys, camloc.viz; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
