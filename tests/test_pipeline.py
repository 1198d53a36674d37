"""The image pipeline: torchvision parity, one resample, every input kind, EXIF orientation, frame round trips."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from camloc.geometry import Geometry, ImageTransform, orient_boxes, orient_mask, resize_mask
from camloc.models.registry import Preprocess
from camloc.pipeline import ImagePipeline, image_to_tensor

MODES = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
         "nearest": T.InterpolationMode.NEAREST}  # fmt: skip


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """A smooth gradient plus noise: resampling differences show."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1), (xx + yy) % 256], axis=-1)
    a = np.clip(base + rng.normal(0, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def _tv(pre: Preprocess, full: bool, short: int | None = None) -> T.Compose:
    h, w = pre.size
    mode = MODES[pre.interpolation]
    if full:
        geo = [T.Resize((h, w), interpolation=mode)]
    else:
        geo = [T.Resize(short, interpolation=mode), T.CenterCrop((h, w))]
    return T.Compose([*geo, T.ToTensor(), T.Normalize(pre.mean, pre.std)])


@pytest.mark.parametrize("interp", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("size", [(640, 480), (97, 300), (224, 224), (50, 30)])
def test_full_resize_equals_torchvision_exactly(interp: str, size: tuple[int, int]) -> None:
    img = _photo(*size)
    pre = Preprocess(size=(224, 192), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation=interp)
    ours = pre.to_tensor(img)
    ref = _tv(pre, full=True)(img)
    assert ours.shape == (3, 224, 192) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)  # bitwise: same PIL call, same float ops


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (300, 300), (200, 150)])
def test_center_crop_equals_torchvision_resize_int_plus_center_crop(size: tuple[int, int]) -> None:
    img = _photo(*size, seed=1)
    for pre, short in [
        (Preprocess(size=(224, 224), resize="center_crop", crop_pct=0.875, interpolation="bilinear"), 256),
        (Preprocess(size=(299, 299), resize="center_crop", crop_pct=299 / 342, interpolation="bicubic"), 342),
        (Preprocess(size=(299, 299), resize="center_crop", crop_pct=0.875, interpolation="bicubic"), 341),  # timm
    ]:
        assert pre.transform().resize == short
        torch.testing.assert_close(pre.to_tensor(img), _tv(pre, full=False, short=short)(img), rtol=0, atol=0)


def test_center_crop_larger_than_the_resized_image_pads_with_zeros_like_torchvision() -> None:
    img = _photo(300, 200, seed=2)
    pre = Preprocess(size=(224, 320), resize="center_crop", crop_pct=1.0)  # short side 224: 336 x 224, crop
    ref = T.Compose([T.Resize(224), T.CenterCrop((224, 320)), T.ToTensor(), T.Normalize(pre.mean, pre.std)])(img)
    torch.testing.assert_close(pre.to_tensor(img), ref, rtol=0, atol=0)
    big = Preprocess(size=(300, 400), resize="center_crop", crop_pct=1.5)  # short side 200 -> pads top/bottom
    ref = T.Compose([T.Resize(200), T.CenterCrop((300, 400)), T.ToTensor(), T.Normalize(big.mean, big.std)])(img)
    torch.testing.assert_close(big.to_tensor(img), ref, rtol=0, atol=0)


def _jpeg_bytes(img: Image.Image, orientation: int | None = None, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    img.save(buf, format="JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def test_path_bytes_array_and_pil_inputs_give_identical_tensors(tmp_path: Path) -> None:
    img = _photo(320, 240, seed=3)
    png = tmp_path / "p.png"
    img.save(png)
    pipe = ImagePipeline(Preprocess(size=(64, 64), interpolation="bicubic"))
    a = pipe(png)
    b = pipe(png.read_bytes())
    c = pipe(np.asarray(img))
    d = pipe(img)
    for other in (b, c, d):
        torch.testing.assert_close(other.tensor, a.tensor, rtol=0, atol=0)
        assert other.geometry == a.geometry
    assert a.path == png and b.path is None and c.path is None
    gray = pipe(np.asarray(img.convert("L")))  # [H, W] uint8 -> gray RGB
    torch.testing.assert_close(gray.tensor, pipe(img.convert("L").convert("RGB")).tensor, rtol=0, atol=0)
    with pytest.raises(TypeError, match="`image` must be a uint8 array"):
        pipe(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="cannot load image '<3 bytes>'"):
        pipe(b"abc")
    # picklable, for DataLoader workers and Ray actors
    again = pickle.loads(pickle.dumps(pipe))
    assert again == pipe
    torch.testing.assert_close(again(png).tensor, a.tensor, rtol=0, atol=0)


def test_jpeg_draft_is_the_only_reduction_and_the_network_input_is_resampled_once(tmp_path: Path) -> None:
    img = _photo(1600, 1200, seed=4)
    data = _jpeg_bytes(img)
    pre = Preprocess(size=(224, 224), interpolation="bicubic")
    item = ImagePipeline(pre)(data)
    # draft: the largest 1/s scale still >= 224 on both sides is 1/4 -> 400 x 300, and nothing else happened
    assert item.image.size == (400, 300) and item.geometry.working_size == (400, 300)
    assert item.original_size == (1600, 1200)
    ref_img = Image.open(io.BytesIO(data))
    ref_img.draft("RGB", (224, 224))
    ref = _tv(pre, full=True)(ref_img.convert("RGB"))  # torchvision on the same DCT-reduced decode
    torch.testing.assert_close(item.tensor, ref, rtol=0, atol=0)
    full = ImagePipeline(pre, draft=False)(data)
    assert full.image.size == (1600, 1200)
    torch.testing.assert_close(full.tensor, _tv(pre, full=True)(Image.open(io.BytesIO(data)).convert("RGB")))
    # the two decodes differ only by the DCT reduction: the inputs agree to a few grey levels on average
    assert float((item.tensor - full.tensor).abs().mean()) < 0.05
    # a display copy keeps the working image at least that large
    assert ImagePipeline(pre, min_working_side=512)(data).image.size == (800, 600)


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_orientation_of_masks_and_boxes_matches_pil(orientation: int) -> None:
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 255, size=(5, 7), dtype=np.uint8)
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }[orientation]  # fmt: skip  (PIL.ImageOps.exif_transpose's table)
    ref = np.asarray(Image.fromarray(stored).transpose(method))
    np.testing.assert_array_equal(orient_mask(stored, orientation), ref)
    np.testing.assert_array_equal(orient_mask(ref, orientation, inverse=True), stored)
    # a box drawn as a mask lands where orient_boxes puts the box
    box = np.array([1.0, 2.0, 4.0, 5.0])  # columns 1..3, rows 2..4 of a 7 x 5 image
    m = np.zeros((5, 7), bool)
    m[2:5, 1:4] = True
    om = orient_mask(m, orientation)
    ys, xs = np.nonzero(om)
    ob = orient_boxes(box, (7, 5), orientation)
    np.testing.assert_array_equal(ob, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    np.testing.assert_array_equal(orient_boxes(ob, om.shape[::-1], orientation, inverse=True), box)


def test_exif_rotated_jpeg_rotates_image_and_ground_truth(tmp_path: Path) -> None:
    # stored pixels 80 x 40 with a bright block at columns 50..69, rows 10..29; EXIF 6 = rotate 90 clockwise
    a = np.zeros((40, 80, 3), np.uint8)
    a[10:30, 50:70] = 255
    data = _jpeg_bytes(Image.fromarray(a), orientation=6)
    pipe = ImagePipeline(Preprocess(size=(80, 40)))  # network input 40 wide, 80 high: the viewed image
    item = pipe(data)
    g = item.geometry
    assert g.orientation == 6 and g.stored_size == (80, 40) and item.original_size == (40, 80)
    stored_box = np.array([[50.0, 10.0, 70.0, 30.0]])  # annotation in the stored frame
    orig = g.map_boxes(stored_box, "stored", "original")
    np.testing.assert_array_equal(orig, [[10, 50, 30, 70]])  # (h - y1, x0, h - y0, x1) for h = 40
    # the viewed (and network) image is bright exactly there
    view = np.asarray(item.image)[..., 0] > 127
    ys, xs = np.nonzero(view)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (10, 50, 30, 70)
    mask = np.zeros((40, 80), bool)
    mask[10:30, 50:70] = True
    np.testing.assert_array_equal(g.map_mask(mask, "stored", "network"), view)
    np.testing.assert_array_equal(g.map_boxes(orig, "original", "stored"), stored_box)
    np.testing.assert_array_equal(g.map_mask(view, "network", "stored"), mask)
    # with orientation=False (wsolevaluation's loader) the stored frame is the original frame
    flat = ImagePipeline(Preprocess(size=(40, 80)), orientation=False)(data)
    assert flat.geometry.orientation == 1 and flat.original_size == (80, 40)


def test_boxes_and_masks_round_trip_between_every_frame() -> None:
    rng = np.random.default_rng(5)
    for _ in range(30):
        orientation = int(rng.integers(1, 9))
        image = (int(rng.integers(40, 400)), int(rng.integers(40, 400)))
        working = (max(1, image[0] // 4), max(1, image[1] // 4)) if rng.random() < 0.5 else None
        crop = None if rng.random() < 0.5 else int(rng.integers(8, 30))
        resize = int(rng.integers(30, 60)) if crop else (int(rng.integers(10, 300)), int(rng.integers(10, 300)))
        g = ImageTransform(resize=resize, crop=crop).geometry(image, working_size=working, orientation=orientation)
        # a box inside the crop's footprint survives original -> network -> working -> stored -> original
        net = np.array([[1.0, 2.0, g.crop_size[0] - 1.5, g.crop_size[1] - 3.25]])
        if crop:
            left, top = g.crop_origin
            net = np.array([[max(0, -left) + 1.0, max(0, -top) + 1.0, min(g.crop_size[0], g.resized_size[0] - left)
                             - 1.0, min(g.crop_size[1], g.resized_size[1] - top) - 1.0]])  # fmt: skip
            if (net[0, 2] <= net[0, 0]) or (net[0, 3] <= net[0, 1]):
                continue
        orig = g.map_boxes(net, "network", "original")
        chain = g.map_boxes(g.map_boxes(g.map_boxes(orig, "original", "working"), "working", "stored"), "stored",
                            "network")  # fmt: skip
        np.testing.assert_allclose(chain, net, rtol=0, atol=1e-9)
        # masks: the same affine maps, nearest at pixel centres; full-resolution round trip is exact
        m = rng.random((g.stored_size[1], g.stored_size[0])) < 0.3
        np.testing.assert_array_equal(g.map_mask(g.map_mask(m, "stored", "original"), "original", "stored"), m)
    # a mask file at another resolution is scaled with its frame (wsolevaluation masks at image size or not)
    g = ImageTransform(resize=(20, 10)).geometry((40, 20))
    half = np.zeros((10, 20), bool)
    half[:, :10] = True
    np.testing.assert_array_equal(g.map_mask(half, "original", "network"), resize_mask(half, (20, 10)))


def test_corner_sampling_matches_opencv_inter_nearest() -> None:
    import cv2

    rng = np.random.default_rng(6)
    for src, dst in [((7, 5), (14, 10)), ((500, 375), (224, 224)), ((13, 9), (5, 17)), ((224, 224), (224, 224))]:
        m = rng.integers(0, 255, size=(src[1], src[0]), dtype=np.uint8)
        ref = cv2.resize(m.astype(np.float32), dst, interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(resize_mask(m, dst, sampling="corner"), ref.astype(np.uint8))
        g = Geometry(src, dst, (0, 0), dst)
        np.testing.assert_array_equal(g.map_mask(m, "original", "network", sampling="corner"), ref.astype(np.uint8))


def test_image_to_tensor_uses_a_given_geometry() -> None:
    img = _photo(100, 50, seed=7)
    pre = Preprocess(size=(20, 40))
    g = pre.geometry((400, 200), working_size=(100, 50))  # a 4x draft-reduced decode of a 400 x 200 photo
    torch.testing.assert_close(image_to_tensor(img, pre, g), pre.to_tensor(img), rtol=0, atol=0)
    np.testing.assert_array_equal(g.map_boxes([[0, 0, 40, 20]], "network", "original"), [[0, 0, 400, 200]])
    np.testing.assert_array_equal(g.map_boxes([[0, 0, 40, 20]], "network", "working"), [[0, 0, 100, 50]])
