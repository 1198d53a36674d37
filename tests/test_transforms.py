"""Box/mask geometry under resize and center crop: hand-computed numbers, round trips, torchvision/PIL parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from camloc.data import (
    Geometry,
    ImageTransform,
    center_crop_boxes,
    center_crop_mask,
    center_crop_origin,
    crop_boxes,
    resize_boxes,
    resize_mask,
    resized_size,
)
from camloc.errors import CamlocTypeError, CamlocValueError

# ------------------------------------------------------------------------------------------- boxes


def test_resize_boxes_hand_computed() -> None:
    boxes = np.array([[10, 20, 30, 40], [0, 0, 100, 50]], np.float32)
    out = resize_boxes(boxes, (100, 50), (50, 200))  # x * 0.5, y * 4
    np.testing.assert_array_equal(out, [[5, 80, 15, 160], [0, 0, 50, 200]])
    assert out.dtype == np.float32
    out64 = resize_boxes(boxes.astype(np.float64)[None], (100, 50), (300, 25))  # [..., 4] shapes kept
    assert out64.shape == (1, 2, 4) and out64.dtype == np.float64
    np.testing.assert_array_equal(out64[0], [[30, 10, 90, 20], [0, 0, 300, 25]])
    assert resize_boxes([[1, 2, 3, 4]], (4, 4), (8, 8)).dtype == np.float32  # int input -> float32
    np.testing.assert_array_equal(resize_boxes(torch.tensor([[1.0, 2, 3, 4]]), (4, 4), (8, 8)), [[2, 4, 6, 8]])


def test_crop_boxes_clips_and_empties() -> None:
    boxes = np.array(
        [
            [10, 10, 20, 20],  # inside
            [0, 0, 100, 100],  # covers the crop -> the whole crop
            [0, 0, 5, 5],  # outside (left/top)
            [5, 12, 10, 30],  # touches the left edge only: zero width -> empty
            [30, 8, 50, 15],  # partly out on the right
        ],
        np.float64,
    )
    out = crop_boxes(boxes, (10, 10), (30, 20))
    np.testing.assert_array_equal(out, [[0, 0, 10, 10], [0, 0, 30, 20], [0, 0, 0, 0], [0, 0, 0, 0], [20, 0, 30, 5]])
    # a padding crop (negative origin) shifts the other way
    np.testing.assert_array_equal(crop_boxes([[0, 0, 4, 4]], (-2, -3), (10, 10)), [[2, 3, 6, 7]])


@pytest.mark.parametrize(
    ("image", "crop"),
    [
        ((256, 256), (224, 224)),
        ((257, 300), (224, 224)),
        ((341, 256), (224, 224)),
        ((225, 226), (224, 224)),
        ((10, 7), (4, 3)),
        ((100, 50), (120, 60)),
        ((101, 51), (120, 60)),
        ((15, 20), (30, 5)),
    ],
)
def test_center_crop_origin_matches_torchvision(image: tuple[int, int], crop: tuple[int, int]) -> None:
    w, h = image
    cw, ch = crop
    # encode each pixel's (column, row) + 1 and read the crop's top-left pixel back (0 = padding)
    cols = torch.arange(w, dtype=torch.float64).expand(h, w) + 1
    rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w) + 1
    out = TF.center_crop(torch.stack([cols, rows]), [ch, cw])
    left, top = center_crop_origin(image, crop)
    # find the output pixel that holds original pixel (0, 0) when padding, else the origin pixel itself
    if left >= 0:
        assert out[0, max(-top, 0), 0].item() == left + 1
    else:
        assert out[0, max(-top, 0), -left].item() == 1 and out[0, max(-top, 0), -left - 1].item() == 0
    if top >= 0:
        assert out[1, 0, max(-left, 0)].item() == top + 1
    else:
        assert out[1, -top, max(-left, 0)].item() == 1 and out[1, -top - 1, max(-left, 0)].item() == 0


def test_center_crop_boxes_hand_computed() -> None:
    # 500 x 375 image, center crop 300 x 300: left = 100, top = round(37.5) = 38 (half to even)
    assert center_crop_origin((500, 375), (300, 300)) == (100, 38)
    out = center_crop_boxes(np.array([[150, 50, 250, 100], [0, 0, 50, 375]]), (500, 375), (300, 300))
    np.testing.assert_array_equal(out, [[50, 12, 150, 62], [0, 0, 0, 0]])


@pytest.mark.parametrize(
    ("image", "resize"), [((500, 375), 256), ((375, 500), 256), ((333, 333), 224), ((640, 427), 256)]
)
def test_resized_size_matches_torchvision(image: tuple[int, int], resize: int) -> None:
    w, h = image
    out = TF.resize(torch.zeros(1, h, w), [resize], antialias=False)
    assert resized_size(image, resize) == (out.shape[-1], out.shape[-2])
    assert resized_size(image, (50, 60)) == (50, 60)
    assert resized_size(image, None) == image


def test_geometry_hand_computed_and_round_trip() -> None:
    g = ImageTransform(resize=256, crop=224).geometry((500, 375))
    assert g == Geometry((500, 375), (341, 256), (58, 16), (224, 224))
    assert g.output_size == (224, 224)
    sx, sy = 341 / 500, 256 / 375
    boxes = np.array([[100, 50, 300, 200], [90, 30, 400, 330]], np.float64)
    fwd = g.forward_boxes(boxes)
    np.testing.assert_allclose(fwd[0], [100 * sx - 58, 50 * sy - 16, 300 * sx - 58, 200 * sy - 16], rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.inverse_boxes(fwd), boxes, rtol=0, atol=1e-5)
    # a box sticking out of the crop comes back clipped to the crop's footprint in the original image
    big = g.inverse_boxes(g.forward_boxes([[0, 0, 500, 375]]))
    np.testing.assert_allclose(big, [[58 / sx, 16 / sy, (58 + 224) / sx, (16 + 224) / sy]], atol=1e-9)
    # outside the crop -> empty, and empty stays empty on the way back
    np.testing.assert_array_equal(g.forward_boxes([[0, 0, 10, 10]]), [[0, 0, 0, 0]])
    np.testing.assert_array_equal(g.inverse_boxes([[0, 0, 0, 0], [5, 5, 5, 9]]), np.zeros((2, 4)))


def test_geometry_random_round_trips() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        image = tuple(int(v) for v in rng.integers(20, 700, size=2))
        resize_choices = [None, int(rng.integers(16, 300)), (int(rng.integers(16, 300)), int(rng.integers(16, 300)))]
        crop_choices = [None, int(rng.integers(8, 200))]
        tf = ImageTransform(resize=resize_choices[rng.integers(3)], crop=crop_choices[rng.integers(2)])
        g = tf.geometry(image)
        # boxes inside the crop's footprint in the original image
        left, top = g.crop_origin
        sx, sy = g.scale
        lo = np.array([max(left, 0) / sx, max(top, 0) / sy])
        hi = np.array(
            [min(left + g.crop_size[0], g.resized_size[0]) / sx, min(top + g.crop_size[1], g.resized_size[1]) / sy]
        )
        a = lo + (hi - lo) * rng.uniform(0, 0.45, size=(10, 2))
        b = hi - (hi - lo) * rng.uniform(0, 0.45, size=(10, 2))
        boxes = np.concatenate([a, b], axis=1)
        np.testing.assert_allclose(g.inverse_boxes(g.forward_boxes(boxes)), boxes, rtol=0, atol=1e-5)
        np.testing.assert_allclose(tf.inverse_boxes(tf.forward_boxes(boxes, image), image), boxes, rtol=0, atol=1e-5)
        assert tf.output_size(image) == g.crop_size


def test_exact_resize_transform() -> None:
    tf = ImageTransform(resize=(224, 224))  # wsolevaluation's test transform
    g = tf.geometry((448, 112))
    assert g.crop_origin == (0, 0) and g.output_size == (224, 224)
    np.testing.assert_array_equal(
        g.forward_boxes([[0, 0, 448, 112], [100, 10, 200, 20]]), [[0, 0, 224, 224], [50, 20, 100, 40]]
    )


# ------------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize(("src", "dst"), [((7, 5), (14, 10)), ((10, 8), (4, 3)), ((13, 9), (5, 17)), ((6, 6), (6, 6))])
def test_resize_mask_matches_pil_nearest(src: tuple[int, int], dst: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 255, size=(src[1], src[0]), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(mask).resize(dst, Image.Resampling.NEAREST))
    out = resize_mask(mask, dst)
    assert out.dtype == np.uint8 and out.shape == (dst[1], dst[0])
    np.testing.assert_array_equal(out, ref)
    exact = torch.nn.functional.interpolate(
        torch.from_numpy(mask)[None, None].float(), size=(dst[1], dst[0]), mode="nearest-exact"
    )
    np.testing.assert_array_equal(out, exact[0, 0].numpy().astype(np.uint8))


def test_center_crop_mask_matches_torchvision() -> None:
    rng = np.random.default_rng(2)
    for (w, h), (cw, ch) in [((10, 7), (4, 3)), ((5, 4), (9, 8)), ((6, 9), (6, 4))]:
        mask = rng.integers(1, 9, size=(2, h, w)).astype(np.int64)
        ref = TF.center_crop(torch.from_numpy(mask), [ch, cw]).numpy()
        np.testing.assert_array_equal(center_crop_mask(mask, (cw, ch)), ref)


def test_geometry_masks_follow_boxes() -> None:
    # a box drawn as a mask lands where forward_boxes puts the box (sizes chosen so edges fall on pixels)
    g = ImageTransform(resize=(40, 30), crop=(20, 20)).geometry((80, 60))  # scale 0.5, origin (10, 5)
    assert g.crop_origin == (10, 5)
    mask = np.zeros((60, 80), bool)
    mask[20:40, 30:50] = True  # box (30, 20, 50, 40)
    fwd = g.forward_mask(mask)
    ys, xs = np.nonzero(fwd)
    np.testing.assert_array_equal(g.forward_boxes([[30, 20, 50, 40]]), [[5, 5, 15, 15]])
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (5, 5, 15, 15) and fwd.sum() == 100
    back = g.inverse_mask(fwd)
    assert back.shape == (60, 80) and back.dtype == bool
    np.testing.assert_array_equal(back, mask)
    # outside the crop's footprint: fill
    ones = g.inverse_mask(np.ones((20, 20), np.uint8), fill=7)
    assert (ones[10:50, 20:60] == 1).all() and ones[0, 0] == 7 and ones.sum() == 1600 + 7 * (4800 - 1600)


def test_geometry_mask_padding_crop() -> None:
    g = ImageTransform(crop=(6, 4)).geometry((4, 2))  # pads 1 left/right, 1 top/bottom
    assert g.crop_origin == (-1, -1)
    mask = np.arange(1, 9).reshape(2, 4)
    fwd = g.forward_mask(mask, fill=-1)
    np.testing.assert_array_equal(fwd, [[-1] * 6, [-1, 1, 2, 3, 4, -1], [-1, 5, 6, 7, 8, -1], [-1] * 6])
    np.testing.assert_array_equal(g.inverse_mask(fwd), mask)
    np.testing.assert_array_equal(g.inverse_boxes([[0, 0, 6, 4]]), [[0, 0, 4, 2]])  # clipped to the image


# -------------------------------------------------------------------------------------------- errors


def test_transform_argument_errors() -> None:
    with pytest.raises(CamlocValueError, match=r"`boxes` must be an array of shape \[\.\.\., 4\]"):
        resize_boxes(np.zeros((2, 3)), (4, 4), (2, 2))
    with pytest.raises(CamlocValueError, match="`to_size` must be a \\(width, height\\) pair of positive integers"):
        resize_boxes(np.zeros((2, 4)), (4, 4), (0, 2))
    with pytest.raises(CamlocValueError, match="`from_size` must be"):
        resize_boxes(np.zeros((2, 4)), 4, (2, 2))
    with pytest.raises(CamlocTypeError, match="`boxes` must be a real numeric array"):
        resize_boxes(np.array([["a", "b", "c", "d"]]), (4, 4), (2, 2))
    with pytest.raises(CamlocValueError, match="`origin` must be a \\(left, top\\) pair of integers"):
        crop_boxes(np.zeros((1, 4)), (0.5, 0), (2, 2))
    with pytest.raises(CamlocValueError, match=r"`mask` must be an array of shape \[\.\.\., H, W\]"):
        resize_mask(np.zeros(3), (2, 2))
    with pytest.raises(CamlocValueError, match="`resize` must be"):
        ImageTransform(resize=0)
    with pytest.raises(CamlocValueError, match="`crop` must be"):
        ImageTransform(crop=(3, -1))
    g = ImageTransform(crop=4).geometry((8, 8))
    with pytest.raises(CamlocValueError, match=r"`mask` must be an array \[\.\.\., 8, 8\] matching image_size"):
        g.forward_mask(np.zeros((4, 4)))
    with pytest.raises(CamlocValueError, match=r"`mask` must be an array \[\.\.\., 4, 4\] matching crop_size"):
        g.inverse_mask(np.zeros((8, 8)))
