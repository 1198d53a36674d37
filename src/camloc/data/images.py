"""Robust image loading: any common file becomes an 8-bit RGB PIL image, or an :class:`ImageLoadError`.

Conventions
-----------
* Sizes are ``(width, height)`` like PIL. ``original_size`` is the full-resolution size *after* the EXIF
  orientation has been applied, i.e. the size of the image as a viewer shows it.
* ``scale = (sx, sy)`` maps the returned image's pixels to original pixels: a box ``(x0, y0, x1, y1)``
  (project box convention: continuous pixel coordinates, pixel column j covers [j, j+1)) found on the
  returned image is ``(x0 * sx, y0 * sy, x1 * sx, y1 * sy)`` in original pixels.
* Transparency (RGBA, LA, PA, P or L/RGB with a ``transparency`` key) is composited on **white**, not
  dropped: the colour under fully transparent pixels is arbitrary (often black) and would show up as
  spurious edges; white matches how such images (logos, product shots) are displayed.
* High-bit-depth images are mapped to 8 bits by their *type range*, not stretched to their own min/max:
  16-bit ("I;16*", and "I" whose values lie in 0..65535) use ``round(v / 257)`` so 0 -> 0 and
  65535 -> 255. Other "I" images are stretched min..max -> 0..255. Float "F" images with all values in
  [0, 1] use ``round(v * 255)``; otherwise they are stretched min..max. NaN becomes 0.
* Multi-frame files (GIF, TIFF, MPO) give their first frame.

Safety
------
Every failure (missing, empty, not an image, truncated, corrupt, too many pixels, unsupported mode)
raises :class:`camloc.errors.ImageLoadError` naming the path. PIL's global state is never changed:
``ImageFile.LOAD_TRUNCATED_IMAGES`` stays ``False`` and every image is fully decoded, so truncated files
are detected. The pixel count is checked against ``max_pixels`` from the header, before any decoding.
PIL's own ``DecompressionBombWarning`` (above ``PIL.Image.MAX_IMAGE_PIXELS``) is superseded by
``max_pixels``; PIL's hard limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``, about 179 MP by default) still
applies, so the effective limit is the smaller of the two (raise PIL's global to go further).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps

from camloc._checks import fail as _fail
from camloc.errors import CamlocValueError, ImageLoadError, ImageTooLargeError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "LoadedImage",
    "decode_image",
    "find_images",
    "load_image",
]

#: Default ``max_pixels`` of :func:`load_image`: 2**27 (about 134 megapixels, e.g. 14000 x 9600),
#: below PIL's own hard limit so that it is the limit that actually applies by default.
DEFAULT_MAX_PIXELS = 2**27

#: File extensions :func:`find_images` picks up (compared case-insensitively).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

_ORIENTATION_TAG = ExifTags.Base.Orientation
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # these transpositions exchange width and height


@dataclass(frozen=True)
class LoadedImage:
    """An image decoded by :func:`load_image`.

    Attributes:
        image: PIL image, mode "RGB", EXIF orientation applied, possibly reduced (see ``scale``).
        original_size: ``(width, height)`` of the full-resolution image after EXIF orientation.
        path: the file it was read from (None for bytes, arrays and PIL images).
        scale: ``(sx, sy)`` = original size / returned size; multiply x by sx and y by sy to map
            coordinates on ``image`` to original pixels. ``(1.0, 1.0)`` when not reduced.
        orientation: the EXIF orientation (1..8) that was applied to the stored pixels (1: none, or not
            applied because ``orientation=False`` was asked for).
    """

    image: Image.Image
    original_size: tuple[int, int]
    path: Path | None
    scale: tuple[float, float]
    orientation: int = 1

    @property
    def stored_size(self) -> tuple[int, int]:
        """``(width, height)`` of the stored pixels (before the EXIF orientation), at full resolution."""
        w, h = self.original_size
        return (h, w) if self.orientation in _SWAPPING_ORIENTATIONS else (w, h)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the returned ``image``."""
        return self.image.size


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(name, "an integer", value, type_error=True)
    if value < 1:
        _fail(name, ">= 1", value)


def _error(path: object, problem: str, *, cls: type[ImageLoadError] = ImageLoadError) -> ImageLoadError:
    return cls(f"cannot load image '{path}': {problem}")


def _check_path(name: str, path: Any) -> Path:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        _fail(name, "a str or os.PathLike path", path, type_error=True)
    return Path(path)


def _target_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """Size with the longer side at most ``max_side``, aspect kept (each side at least 1)."""
    w, h = size
    if max_side is None or max(w, h) <= max_side:
        return w, h
    f = max_side / max(w, h)
    return max(1, min(max_side, round(w * f))), max(1, min(max_side, round(h * f)))


def _to_uint8_gray(img: Image.Image) -> Image.Image:
    """Map an "I;16*", "I" or "F" image to mode "L" by its value range (see module docstring)."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        arr = arr.astype(np.float64) / 257.0
    elif img.mode == "I":
        arr = arr.astype(np.float64)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo >= 0 and hi <= 65535:
            arr = arr / 257.0
        else:
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    else:  # "F"
        arr = arr.astype(np.float64)
        finite = np.isfinite(arr)
        if not finite.any():
            arr = np.zeros_like(arr)
        else:
            lo, hi = float(arr[finite].min()), float(arr[finite].max())
            if lo >= 0.0 and hi <= 1.0:
                arr = arr * 255.0
            else:
                arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
            arr = np.where(finite, arr, 0.0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


class _UnsupportedModeError(Exception):
    pass


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        return _composite_on_white(img)
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _to_uint8_gray(img).convert("RGB")
    try:  # "1", "L", "P", "CMYK", "YCbCr", "HSV", "RGBX", ...
        return img.convert("RGB")
    except ValueError as exc:  # e.g. "LAB": PIL has no direct conversion
        raise _UnsupportedModeError(f"pixel mode {mode!r} cannot be converted to RGB") from exc


#: What :func:`decode_image` accepts: a path, the encoded file's bytes, a ``uint8`` array ``[H, W, 3]`` /
#: ``[H, W]`` (RGB / gray pixels) or a PIL image.
ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | np.ndarray | Image.Image


def _describe_source(source: Any) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return str(source)


def _open_file(p: Path) -> io.BufferedReader:
    try:
        st = p.stat()
    except FileNotFoundError:
        raise _error(p, "no such file") from None
    except OSError as exc:
        raise _error(p, f"cannot access file ({exc.strerror or exc})") from exc
    if p.is_dir():
        raise _error(p, "it is a directory, not a file")
    if st.st_size == 0:
        raise _error(p, "file is empty (0 bytes)")
    try:
        return open(p, "rb")  # closed by the caller's with statement
    except OSError as exc:
        raise _error(p, f"cannot open file ({exc.strerror or exc})") from exc


#: ``(stored size, orientation) -> the size JPEG draft mode must cover, in the stored frame`` (None: full size)
_Request = Callable[[tuple[int, int], int], "tuple[int, int] | None"]


def _min_size_request(min_size: tuple[int, int] | None, min_side: int | None) -> _Request:
    def request(raw: tuple[int, int], tag: int) -> tuple[int, int] | None:
        if min_size is None and min_side is None:
            return None
        need = (1, 1) if min_size is None else (min_size[1], min_size[0]) if tag in _SWAPPING_ORIENTATIONS else min_size
        if min_side is not None:
            by_side = _target_size(raw, min_side)
            need = (max(need[0], by_side[0]), max(need[1], by_side[1]))
        return need

    return request


def _decode_path(p: Path, max_pixels: int, request: _Request, orientation: bool) -> LoadedImage:
    img, original, tag = _decode_encoded(_open_file(p), p, max_pixels=max_pixels, request=request,
                                         orientation=orientation)  # fmt: skip
    return LoadedImage(img, original, p, (original[0] / img.size[0], original[1] / img.size[1]), tag)


def _decode_encoded(
    fh: Any, name: Any, *, max_pixels: int, request: _Request, orientation: bool
) -> tuple[Image.Image, tuple[int, int], int]:
    """Decode an open binary stream: ``(RGB image, original size, orientation applied)``."""
    try:
        with fh:
            with warnings.catch_warnings():
                # max_pixels below replaces PIL's warning-level bomb check (PIL's hard limit still applies).
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img: Image.Image = Image.open(fh)
                raw_w, raw_h = img.size
                if raw_w * raw_h > max_pixels:
                    raise _error(
                        name,
                        f"image of {raw_w}x{raw_h} = {raw_w * raw_h} pixels exceeds max_pixels={max_pixels} "
                        "(possible decompression bomb; pass a larger max_pixels to load it)",
                        cls=ImageTooLargeError,
                    )
                tag = int(img.getexif().get(_ORIENTATION_TAG, 1) or 1) if orientation else 1
                tag = tag if tag in (2, 3, 4, 5, 6, 7, 8) else 1
                draft = request((raw_w, raw_h), tag)
                if draft is not None:
                    # JPEG: decode at the largest 1/s scale still >= the requested size (a DCT-domain
                    # reduction, not a resample). No-op for other formats.
                    img.draft("RGB", draft)
                img.load()  # full decode: truncated or corrupt data raises here
            if tag != 1:
                img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
    except ImageLoadError:
        raise
    except _UnsupportedModeError as exc:
        raise _error(name, str(exc)) from exc
    except Image.DecompressionBombError as exc:
        problem = f"too many pixels for PIL's global limit PIL.Image.MAX_IMAGE_PIXELS ({exc})"
        raise _error(name, problem, cls=ImageTooLargeError) from exc
    except Image.UnidentifiedImageError as exc:
        raise _error(name, "not an image file, or a format PIL cannot identify") from exc
    except MemoryError as exc:
        raise _error(name, "out of memory while decoding") from exc
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, struct.error, EOFError, ...
        detail = str(exc) or type(exc).__name__
        if "truncated" in detail:
            detail = f"file is truncated or incomplete ({detail})"
        raise _error(name, f"corrupt or unreadable image data: {detail}") from exc
    original = (raw_h, raw_w) if tag in _SWAPPING_ORIENTATIONS else (raw_w, raw_h)
    return img, original, tag


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:
        _fail("image", "a uint8 array", f"an array of dtype {arr.dtype}", type_error=True)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))):
        _fail("image", "an array [H, W], [H, W, 3] or [H, W, 4]", f"an array of shape {arr.shape}")
    if arr.size == 0:
        _fail("image", "a non-empty array", f"shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return _to_rgb(Image.fromarray(np.ascontiguousarray(arr)))  # uint8: "L", "RGB" or "RGBA"


def decode_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: tuple[int, int] | None = None,
    min_side: int | None = None,
    orientation: bool = True,
) -> LoadedImage:
    """Decode ``source`` into an 8-bit RGB PIL image, never resampling it.

    Args:
        source: an image file path, the bytes of an encoded image (a web upload), a ``uint8`` array
            ``[H, W]`` / ``[H, W, 3]`` / ``[H, W, 4]`` (gray / RGB / RGBA pixels, e.g. from a Ray actor) or a
            PIL image. Paths and bytes go through the same decoder; arrays and PIL images are taken as pixels.
        max_pixels: refuse encoded images whose header declares more pixels (checked before decoding).
        min_size: ``(width, height)`` in the original frame the decoded image must at least have: JPEGs are then
            decoded directly at 1/2, 1/4 or 1/8 scale (``Image.draft``, a reduction in the DCT, not a resample)
            when that still covers ``min_size``. Other formats, arrays and PIL images are returned at full size.
        min_side: likewise, the longer side of the decoded image stays at least ``min(min_side, long side)``.
        orientation: apply the EXIF orientation of paths, bytes and PIL images (arrays carry none).

    Returns:
        :class:`LoadedImage` with ``scale`` = original size / decoded size and the ``orientation`` applied.

    Raises:
        ImageLoadError: unreadable paths or bytes (see :func:`load_image`).
        CamlocTypeError / CamlocValueError: an unsupported source type or array.
    """
    _check_positive_int("max_pixels", max_pixels)
    if min_size is not None and not (
        isinstance(min_size, tuple) and len(min_size) == 2 and all(isinstance(v, int) and v > 0 for v in min_size)
    ):
        _fail("min_size", "None or a (width, height) pair of positive ints", min_size)
    if min_side is not None:
        _check_positive_int("min_side", min_side)
    request = _min_size_request(min_size, min_side)
    path: Path | None = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageLoadError("cannot load image '<0 bytes>': no data (0 bytes)")
        name = _describe_source(source)
        img, original, tag = _decode_encoded(
            io.BytesIO(bytes(source)), name, max_pixels=max_pixels, request=request,
            orientation=orientation,
        )  # fmt: skip
    elif isinstance(source, np.ndarray):
        img, tag = _from_array(source), 1
        original = img.size
    elif isinstance(source, Image.Image):
        tag = int(source.getexif().get(_ORIENTATION_TAG, 1) or 1) if orientation else 1
        tag = tag if tag in (2, 3, 4, 5, 6, 7, 8) else 1
        img = ImageOps.exif_transpose(source) if tag != 1 else source
        try:
            img = _to_rgb(img)
        except _UnsupportedModeError as exc:
            raise ImageLoadError(f"cannot load image '<PIL image>': {exc}") from exc
        original = img.size
    else:
        return _decode_path(_check_path("source", source), max_pixels, request, orientation)
    w, h = img.size
    return LoadedImage(img, original, path, (original[0] / w, original[1] / h), tag)


def load_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    working_max_side: int | None = None,
) -> LoadedImage:
    """Decode the image at ``path`` into an 8-bit RGB PIL image, optionally reduced for display.

    Args:
        path: image file (any format PIL reads: JPEG, PNG, BMP, GIF, TIFF, WebP, ...).
        max_pixels: refuse images whose header declares more than this many pixels (decompression-bomb
            guard, checked before decoding). Default :data:`DEFAULT_MAX_PIXELS` (2**27, ~134 MP).
        working_max_side: if given, the returned image is reduced (aspect kept) so that its longer side
            is at most this many pixels. JPEGs are then decoded directly at 1/2, 1/4 or 1/8 scale
            (``Image.draft``) so the full-size pixels are never allocated, then resized (bilinear) to that
            size; other formats are decoded in full and resized. ``original_size`` and ``scale`` still
            describe the full-size image. For network inputs use :mod:`camloc.pipeline`, which resamples once.

    Returns:
        :class:`LoadedImage` (see the module docstring for the conventions).

    Raises:
        ImageLoadError: the file is missing, empty, not an image, truncated or corrupt, declares more than
            ``max_pixels`` pixels, or has a pixel mode that cannot be converted to RGB.
    """
    p = _check_path("path", path)
    _check_positive_int("max_pixels", max_pixels)
    if working_max_side is not None:
        _check_positive_int("working_max_side", working_max_side)
    if working_max_side is None:
        return decode_image(p, max_pixels=max_pixels)
    side = working_max_side
    loaded = _decode_path(p, max_pixels, lambda raw, tag: _target_size(raw, side), True)
    target = _target_size(loaded.original_size, side)
    img = loaded.image
    if img.size != target:
        img = img.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
    ow, oh = loaded.original_size
    return LoadedImage(img, loaded.original_size, p, (ow / img.size[0], oh / img.size[1]), loaded.orientation)


def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def find_images(
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], *, recursive: bool = True
) -> list[Path]:
    """List image files named by ``paths``: files are taken as they are, folders are searched.

    Image files are those with an extension in :data:`IMAGE_EXTENSIONS` (case-insensitive). In folders,
    hidden entries (names starting with ".", e.g. macOS "._x.jpg" resource forks) are skipped and
    symlinked sub-folders are not followed; ``recursive=False`` looks at the folder's direct children
    only. The result is sorted (by path string) and deduplicated (by resolved path: a file named twice,
    or both directly and through its folder, appears once, under the first spelling met).

    Raises:
        CamlocValueError: a path does not exist, or a path that is a file has no image extension.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if isinstance(paths, bytes) or not isinstance(paths, Sequence):
        _fail("paths", "a sequence of str or os.PathLike paths", paths, type_error=True)
    found: dict[Path, Path] = {}

    def add(f: Path) -> None:
        found.setdefault(f.resolve(), f)

    for i, raw in enumerate(paths):
        p = _check_path(f"paths[{i}]", raw)
        if p.is_dir():
            if recursive:
                for root, dirs, files in os.walk(p):
                    dirs[:] = [d for d in dirs if not d.startswith(".")]
                    for name in files:
                        f = Path(root, name)
                        if not name.startswith(".") and _is_image_name(f) and f.is_file():
                            add(f)
            else:
                for f in p.iterdir():
                    if not f.name.startswith(".") and _is_image_name(f) and f.is_file():
                        add(f)
        elif p.is_file():
            if not _is_image_name(p):
                exts = " ".join(sorted(IMAGE_EXTENSIONS))
                _fail(f"paths[{i}]", f"an image file ({exts}) or a folder", f"'{p}'")
            add(p)
        else:
            raise CamlocValueError(f"`paths[{i}]` must be an existing file or folder; got '{p}' (not found)")
    return sorted(found.values(), key=lambda q: str(q))
