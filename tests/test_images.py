"""load_image: every mode, EXIF orientation, reduced decoding of big JPEGs, and clear errors; find_images."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageFile, JpegImagePlugin, features

from camloc.data.images import DEFAULT_MAX_PIXELS, LoadedImage, find_images, load_image
from camloc.errors import CamlocValueError, ImageLoadError

# ---------------------------------------------------------------------------------------- helpers


def _rgb(li: LoadedImage) -> np.ndarray:
    assert li.image.mode == "RGB"
    return np.asarray(li.image).astype(np.int32)


def _quadrants(h: int, w: int) -> np.ndarray:
    """uint8 (h, w, 3): top-left red, top-right green, bottom-left blue, bottom-right white."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 0)
    a[: h // 2, w // 2 :] = (0, 255, 0)
    a[h // 2 :, : w // 2] = (0, 0, 255)
    a[h // 2 :, w // 2 :] = (255, 255, 255)
    return a


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR claims width x height, with no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------------- modes & content


def test_rgb_png_exact_and_fields(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    p = tmp_path / "x.png"
    Image.fromarray(arr).save(p)
    li = load_image(p)
    assert li.path == p and li.original_size == (13, 9) and li.size == (13, 9) and li.scale == (1.0, 1.0)
    np.testing.assert_array_equal(np.asarray(li.image), arr)
    assert load_image(str(p)).path == p  # str paths accepted


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (1, lambda a: a),
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),  # stored rotated; viewer turns it 90 degrees clockwise
        (8, lambda a: np.rot90(a, 1)),
        (2, lambda a: a[:, ::-1]),
        (5, lambda a: np.transpose(a, (1, 0, 2))),
    ],
)
def test_exif_orientation_jpeg(tmp_path: Path, orientation: int, expected) -> None:
    raw = _quadrants(32, 64)  # 64 wide, 32 high, 16-pixel blocks: JPEG keeps flat colours almost exactly
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    p = tmp_path / "rot.jpg"
    Image.fromarray(raw).save(p, quality=95, exif=exif)
    li = load_image(p)
    want = expected(raw).astype(np.int32)
    assert li.original_size == (want.shape[1], want.shape[0]) == li.size
    assert np.abs(_rgb(li) - want).mean() < 4.0

    small = load_image(p, working_max_side=16)
    assert small.original_size == li.original_size
    assert max(small.size) == 16
    sx, sy = small.scale
    assert sx == pytest.approx(li.size[0] / small.size[0]) and sy == pytest.approx(li.size[1] / small.size[1])
    # the reduced image shows the same quadrant layout (sample the quadrant centres)
    h, w = want.shape[:2]
    for fy in (0.25, 0.75):
        for fx in (0.25, 0.75):
            ref = want[int(fy * h), int(fx * w)]
            got = _rgb(small)[int(fy * small.size[1]), int(fx * small.size[0])]
            assert np.abs(got - ref).max() < 40


def test_grayscale_and_one_bit(tmp_path: Path) -> None:
    g = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(g).save(tmp_path / "g.png")
    li = load_image(tmp_path / "g.png")
    np.testing.assert_array_equal(np.asarray(li.image), np.repeat(g[:, :, None], 3, axis=2))

    bits = np.zeros((5, 8), bool)
    bits[1, 2] = bits[4, 7] = True
    Image.fromarray(bits).convert("1").save(tmp_path / "b.png")
    li = load_image(tmp_path / "b.png")
    want = np.where(bits, 255, 0)
    np.testing.assert_array_equal(np.asarray(li.image), np.repeat(want[:, :, None], 3, axis=2))


def test_16bit_png_spans_full_8bit_range(tmp_path: Path) -> None:
    v = np.array([0, 1, 128, 129, 257, 32896, 65278, 65534, 65535] * 2, dtype=np.uint16).reshape(2, 9)
    p = tmp_path / "g16.png"
    Image.fromarray(v).save(p)
    with Image.open(p) as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    got = _rgb(load_image(p))[:, :, 0]
    want = np.rint(v / 257.0).astype(np.int32)  # 0 -> 0, 32896 = 128 * 257 -> 128, 65535 -> 255
    np.testing.assert_array_equal(got, want)
    assert got.max() == 255 and got[0, 5] == 128


def test_int32_and_float_tiff(tmp_path: Path) -> None:
    # "I" in 0..65535 -> treated as 16 bit
    v = np.array([[0, 257, 65535]], dtype=np.int32)
    Image.fromarray(v).save(tmp_path / "i.tif")
    np.testing.assert_array_equal(_rgb(load_image(tmp_path / "i.tif"))[0, :, 1], [0, 1, 255])
    # "I" with negative values -> stretched min..max
    v = np.array([[-100, 0, 155]], dtype=np.int32)
    Image.fromarray(v).save(tmp_path / "n.tif")
    np.testing.assert_array_equal(_rgb(load_image(tmp_path / "n.tif"))[0, :, 2], [0, 100, 255])
    # "F" in [0, 1] -> * 255
    f = np.array([[0.0, 0.5, 1.0, 0.2]], dtype=np.float32)
    Image.fromarray(f).save(tmp_path / "f.tif")
    with Image.open(tmp_path / "f.tif") as im:
        assert im.mode == "F"
    np.testing.assert_array_equal(_rgb(load_image(tmp_path / "f.tif"))[0, :, 0], [0, 128, 255, 51])
    # "F" outside [0, 1] -> stretched; NaN -> 0
    f = np.array([[-1.0, 0.0, 4.0, np.nan]], dtype=np.float32)
    Image.fromarray(f).save(tmp_path / "g.tif")
    np.testing.assert_array_equal(_rgb(load_image(tmp_path / "g.tif"))[0, :, 0], [0, 51, 255, 0])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    p = tmp_path / "c.jpg"
    im = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # no cyan, full magenta + yellow = red
    im.paste((255, 0, 0, 0), (8, 0, 16, 8))  # full cyan = (0, 255, 255)
    im.save(p, quality=95)
    with Image.open(p) as chk:
        assert chk.mode == "CMYK"
    got = _rgb(load_image(p))
    assert got.shape == (8, 16, 3)
    assert np.abs(got[:, :8] - [255, 0, 0]).max() <= 3
    assert np.abs(got[:, 8:] - [0, 255, 255]).max() <= 3


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    pal = Image.new("P", (4, 3), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pal.putpixel((1, 1), 1)
    pal.putpixel((2, 1), 2)
    pal.save(tmp_path / "plain.png")
    got = _rgb(load_image(tmp_path / "plain.png"))
    assert got[0, 0].tolist() == [0, 0, 0] and got[1, 1].tolist() == [255, 0, 0] and got[1, 2].tolist() == [0, 0, 255]

    for name in ("t.png", "t.gif"):
        pal.save(tmp_path / name, transparency=0)  # index 0 (black) is transparent -> white
        got = _rgb(load_image(tmp_path / name))
        assert got.shape == (3, 4, 3)
        assert got[0, 0].tolist() == [255, 255, 255]
        assert got[1, 1].tolist() == [255, 0, 0] and got[1, 2].tolist() == [0, 0, 255]


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent -> white
    rgba[0, 2] = (0, 0, 0, 128)  # half black over white -> 127
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = _rgb(load_image(tmp_path / "a.png"))
    assert got[0, 0].tolist() == [255, 0, 0]
    assert got[0, 1].tolist() == [255, 255, 255]
    assert np.abs(got[0, 2] - 127).max() <= 1  # 255 * (1 - 128/255) = 127

    la = np.array([[[0, 0], [0, 255], [200, 255]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    got = _rgb(load_image(tmp_path / "la.png"))
    assert got[0, :, 0].tolist() == [255, 0, 200]


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "TIFF", "WEBP"])
def test_other_formats(tmp_path: Path, fmt: str) -> None:
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    arr = _quadrants(16, 24)
    p = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(arr).save(p, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    li = load_image(p)
    assert li.original_size == (24, 16)
    np.testing.assert_array_equal(np.asarray(li.image), arr)


def test_working_max_side_png_and_no_upscaling(tmp_path: Path) -> None:
    arr = _quadrants(300, 200)
    p = tmp_path / "q.png"
    Image.fromarray(arr).save(p)
    li = load_image(p, working_max_side=100)
    assert li.size == (67, 100) and li.original_size == (200, 300)
    assert li.scale == (200 / 67, 300 / 100)
    li = load_image(p, working_max_side=1000)  # never enlarged
    assert li.size == (200, 300) and li.scale == (1.0, 1.0)


# ------------------------------------------------------------------------------------ big JPEG


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6000 x 4000 (24 MP) smooth-gradient JPEG, made once per module."""
    h, w = 4000, 6000
    arr = np.empty((h, w, 3), np.uint8)
    arr[:, :, 0] = (np.arange(w) * 255 // (w - 1)).astype(np.uint8)[None, :]
    arr[:, :, 1] = (np.arange(h) * 255 // (h - 1)).astype(np.uint8)[:, None]
    arr[:, :, 2] = 128
    p = tmp_path_factory.mktemp("big") / "big.jpg"
    Image.fromarray(arr).save(p, quality=85)
    return p


def test_big_jpeg_is_decoded_reduced(big_jpeg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded_sizes: list[tuple[int, int]] = []
    real_load = JpegImagePlugin.JpegImageFile.load

    def spy_load(self: JpegImagePlugin.JpegImageFile):  # type: ignore[no-untyped-def]
        out = real_load(self)
        decoded_sizes.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy_load)
    li = load_image(big_jpeg, working_max_side=1024)
    assert li.original_size == (6000, 4000)
    assert li.size == (1024, 683)
    assert li.scale == (6000 / 1024, 4000 / 683)
    # decoded by libjpeg at 1/4 scale (1500 x 1000 >= 1024 x 683): the 24 MP array never exists
    assert decoded_sizes and max(decoded_sizes) == (1500, 1000)

    # the reduced image is the gradient: red follows x, green follows y (in original coordinates)
    got = _rgb(li)
    xs = (np.arange(1024) + 0.5) * li.scale[0]
    ys = (np.arange(683) + 0.5) * li.scale[1]
    assert np.abs(got[340, :, 0] - xs * 255 / 5999).max() < 6
    assert np.abs(got[:, 500, 1] - ys * 255 / 3999).max() < 6
    assert np.abs(got[:, :, 2] - 128).max() < 6


def test_big_jpeg_bomb_limit_checked_before_decoding(big_jpeg: Path) -> None:
    with pytest.raises(ImageLoadError, match=r"6000x4000 = 24000000 pixels exceeds max_pixels=1000000"):
        load_image(big_jpeg, max_pixels=1_000_000)


# -------------------------------------------------------------------------------------------- errors


def _load_error(path: Path, **kwargs: object) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_image(path, **kwargs)  # type: ignore[arg-type]
    msg = str(info.value)
    assert str(path) in msg
    assert isinstance(info.value, ValueError)
    return msg


def test_missing_empty_directory_and_not_an_image(tmp_path: Path) -> None:
    assert "no such file" in _load_error(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert "empty (0 bytes)" in _load_error(tmp_path / "empty.jpg")
    assert "directory" in _load_error(tmp_path)
    (tmp_path / "text.jpg").write_text("this is not a JPEG at all\n")
    assert "not an image" in _load_error(tmp_path / "text.jpg")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files(tmp_path: Path, fmt: str) -> None:
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(arr).save(full, format=fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    msg = _load_error(cut)
    assert "truncated" in msg or "corrupt" in msg
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # global PIL state untouched
    assert load_image(full).size == (64, 64)


def test_truncated_jpeg_also_detected_when_decoding_reduced(tmp_path: Path) -> None:
    arr = np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    p = tmp_path / "cut.jpg"
    Image.fromarray(arr).save(tmp_path / "full.jpg")
    p.write_bytes((tmp_path / "full.jpg").read_bytes()[:-5000])
    assert "truncated" in _load_error(p, working_max_side=32)


def test_decompression_bombs(tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    _png_header_only(huge, 100_000, 100_000)  # 10 gigapixels: above PIL's own hard limit
    msg = _load_error(huge)
    assert "pixels" in msg
    mid = tmp_path / "mid.png"
    _png_header_only(mid, 12_000, 12_000)  # 144 MP > DEFAULT_MAX_PIXELS, below PIL's hard limit
    assert DEFAULT_MAX_PIXELS < 12_000 * 12_000
    assert "exceeds max_pixels" in _load_error(mid)
    # 100 MP passes max_pixels (PIL only warns there; the warning must not escape) but has no data
    warn = tmp_path / "warn.png"
    _png_header_only(warn, 10_000, 10_000)
    assert "corrupt" in _load_error(warn)
    small = tmp_path / "small.png"
    Image.new("RGB", (10, 10)).save(small)
    assert "exceeds max_pixels=99" in _load_error(small, max_pixels=99)
    assert load_image(small, max_pixels=100).size == (10, 10)


def test_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"`path` must be a str or os\.PathLike"):
        load_image(3)  # type: ignore[arg-type]
    with pytest.raises(CamlocValueError, match="`working_max_side` must be >= 1"):
        load_image(tmp_path / "x.png", working_max_side=0)
    with pytest.raises(TypeError, match="`max_pixels` must be an integer"):
        load_image(tmp_path / "x.png", max_pixels=1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- find_images


def test_find_images(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for rel in ["b.jpg", "a.PNG", "sub/c.JpEg", "sub/deeper/d.webp", "sub/e.tiff", ".hidden/h.jpg", "._x.jpg"]:
        (root / rel).write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    (root / "sub" / "f.gif.bak").write_text("x")
    (root / "dir.jpg").mkdir()  # a folder with an image-like name is not a file

    got = find_images([root])
    assert got == [
        root / "a.PNG",
        root / "b.jpg",
        root / "sub" / "c.JpEg",
        root / "sub" / "deeper" / "d.webp",
        root / "sub" / "e.tiff",
    ]
    assert find_images([root], recursive=False) == [root / "a.PNG", root / "b.jpg"]
    # files and folders mixed, duplicates (also via another spelling) removed
    again = find_images([root / "sub" / "c.JpEg", root / "sub", str(root / "sub" / ".." / "b.jpg"), root / "b.jpg"])
    assert sorted(p.resolve() for p in again) == sorted(
        (root / r).resolve() for r in ["b.jpg", "sub/c.JpEg", "sub/deeper/d.webp", "sub/e.tiff"]
    )
    assert len(again) == 4
    assert find_images(str(root / "b.jpg")) == [root / "b.jpg"]  # a single path is accepted
    assert find_images([tmp_path / "data" / "sub" / "deeper"], recursive=False) == [root / "sub/deeper/d.webp"]


def test_find_images_errors(tmp_path: Path) -> None:
    with pytest.raises(CamlocValueError, match=r"`paths\[1\]` must be an existing file or folder; got .*nope"):
        find_images([tmp_path, tmp_path / "nope"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CamlocValueError, match=r"`paths\[0\]` must be an image file .*notes\.txt"):
        find_images([tmp_path / "notes.txt"])
    with pytest.raises(TypeError, match="`paths` must be a sequence"):
        find_images(42)  # type: ignore[arg-type]


def test_too_many_pixels_is_its_own_error_class(tmp_path: Path) -> None:
    """Servers map a pixel-count refusal (a possible decompression bomb) to its own status by type, not by text."""
    from camloc.errors import ImageTooLargeError

    huge, mid, warn = tmp_path / "huge.png", tmp_path / "mid.png", tmp_path / "warn.png"
    _png_header_only(huge, 100_000, 100_000)  # PIL's own hard limit
    _png_header_only(mid, 12_000, 12_000)  # camloc's max_pixels
    _png_header_only(warn, 10_000, 10_000)  # within the limits, but corrupt
    for path in (huge, mid):
        with pytest.raises(ImageTooLargeError):
            load_image(path)
    with pytest.raises(ImageLoadError) as info:
        load_image(warn)
    assert not isinstance(info.value, ImageTooLargeError)
