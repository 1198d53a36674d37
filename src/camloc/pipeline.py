"""The one image pipeline: decode -> orientation/mode fixes -> ONE resize to the network input -> tensor + geometry.

Used by ``explain``, ``evaluate`` and anything that feeds images to a model (a torch ``Dataset``, a web server
that receives bytes, a Ray actor that receives arrays)::

    pipe = ImagePipeline(info.preprocess)            # frozen dataclass: picklable, no global state
    item = pipe("photo.jpg")                         # or pipe(jpeg_bytes), pipe(uint8_array), pipe(pil_image)
    logits = model(item.tensor[None])
    boxes_in_photo = item.geometry.map_boxes(network_boxes, "network", "original")

Steps:

1. **decode** (:func:`camloc.data.images.decode_image`): any PIL format from a path or bytes, or pixels from an
   array / PIL image; the EXIF orientation is applied (``orientation=True``), every mode becomes 8-bit RGB.
   With ``draft=True`` a JPEG is decoded at 1/2, 1/4 or 1/8 scale when that still covers what the network
   input needs (a reduction in the DCT at decode time, not a resample).
2. **one resize** of the decoded (working) image to the preprocessing's resize size with its interpolation
   (PIL, as torchvision's PIL backend: ``img.resize(size, resample)``), then the centre crop for
   ``resize="center_crop"`` (torchvision ``CenterCrop``). The image is resampled exactly once.
3. **tensor**: ``ToTensor`` + ``Normalize`` arithmetic (``uint8 / 255``, ``(x - mean) / std`` in float32).

The returned :class:`~camloc.geometry.Geometry` maps boxes and masks between the stored, original, working and
network frames (:mod:`camloc.geometry`, where the box convention is written down).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from camloc.data.images import DEFAULT_MAX_PIXELS, ImageSource, LoadedImage, decode_image
from camloc.geometry import Geometry, ImageTransform

if TYPE_CHECKING:
    import torch

    from camloc.models.registry import Preprocess

__all__ = ["ImagePipeline", "Prepared", "image_to_tensor", "preprocess_transform"]

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def preprocess_transform(preprocess: Preprocess) -> ImageTransform:
    """The geometry of ``preprocess`` as an :class:`~camloc.geometry.ImageTransform`.

    ``resize="full"``: ``Resize((H, W))``. ``resize="center_crop"``: ``Resize(s)`` of the shorter side with
    ``s = floor(min(H, W) / crop_pct)`` (timm's rule; ``crop_pct = 224 / 256`` gives torchvision's 256), then
    ``CenterCrop((H, W))``.
    """
    h, w = preprocess.size
    if preprocess.resize == "full":
        return ImageTransform(resize=(w, h))
    short = int(np.floor(min(h, w) / preprocess.crop_pct + 1e-6))  # + 1e-6: 299 / (299 / 342) is 342
    return ImageTransform(resize=short, crop=(w, h))


def _decode_request(preprocess: Preprocess) -> tuple[int, int]:
    """The smallest working size ``(w, h)`` the one resize needs (JPEG draft mode may reduce down to it)."""
    h, w = preprocess.size
    if preprocess.resize == "full":
        return w, h
    t = preprocess_transform(preprocess)
    assert isinstance(t.resize, int)
    return t.resize, t.resize


def image_to_tensor(image: Image.Image, preprocess: Preprocess, geometry: Geometry | None = None) -> torch.Tensor:
    """RGB PIL image -> normalised ``Tensor[3, H, W]`` float32 (``preprocess.size = (H, W)``), one resample.

    ``geometry`` (default: ``preprocess`` applied to this image) gives the resize size and crop; the result
    equals torchvision's ``Resize`` (PIL backend, same interpolation) + ``CenterCrop`` + ``ToTensor`` +
    ``Normalize``.
    """
    import torch

    if image.mode != "RGB":
        image = image.convert("RGB")
    g = preprocess_transform(preprocess).geometry(image.size) if geometry is None else geometry
    img = image
    if img.size != g.resized_size:
        img = img.resize(g.resized_size, _RESAMPLE[preprocess.interpolation])
    left, top = g.crop_origin
    cw, ch = g.crop_size
    if (left, top, cw, ch) != (0, 0, *img.size):
        img = img.crop((left, top, left + cw, top + ch))  # outside the image: zeros, as torchvision's padding
    x = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous().float().div(255)
    mean = torch.as_tensor(preprocess.mean, dtype=torch.float32)[:, None, None]
    std = torch.as_tensor(preprocess.std, dtype=torch.float32)[:, None, None]
    return x.sub_(mean).div_(std)


@dataclass(frozen=True)
class Prepared:
    """One image made ready for the network.

    Attributes:
        tensor: ``Tensor[3, H, W]`` float32, normalised.
        geometry: the maps between the stored, original, working and network frames.
        image: the decoded working image (RGB PIL, orientation applied), e.g. for drawing.
        path: the file it came from (None for bytes, arrays and PIL images).
    """

    tensor: torch.Tensor
    geometry: Geometry
    image: Image.Image
    path: Path | None

    @property
    def original_size(self) -> tuple[int, int]:
        """``(width, height)`` of the image after the EXIF orientation, at full resolution."""
        return self.geometry.image_size


@dataclass(frozen=True)
class ImagePipeline:
    """Decode -> orient -> one resize -> tensor, with the geometry (see the module docstring).

    Attributes:
        preprocess: the preprocessing that travels with the weights (:class:`~camloc.models.registry.Preprocess`).
        draft: let JPEGs be decoded at reduced scale when that still covers the network input (default True;
            False decodes every pixel, as torchvision's and wsolevaluation's loaders do).
        orientation: apply the EXIF orientation (default True; wsolevaluation's loader does not).
        max_pixels: decompression-bomb guard (:func:`~camloc.data.images.decode_image`).
        min_working_side: keep at least this longer side in the decoded image (e.g. for a display copy).
        interpolation: override ``preprocess.interpolation`` for the one resize (None: the preprocessing's).

    A frozen dataclass of plain values: picklable (DataLoader workers, Ray), no global state.
    """

    preprocess: Preprocess
    draft: bool = True
    orientation: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_working_side: int | None = None
    interpolation: str | None = None

    def __post_init__(self) -> None:
        from camloc._checks import check_choice, fail
        from camloc.models.registry import Preprocess

        if not isinstance(self.preprocess, Preprocess):
            fail("preprocess", "a camloc Preprocess", self.preprocess, type_error=True)
        if self.interpolation is not None:
            check_choice("interpolation", self.interpolation, tuple(_RESAMPLE))
            object.__setattr__(self, "preprocess", self.preprocess.replace(interpolation=self.interpolation))

    @property
    def transform(self) -> ImageTransform:
        """The resize / crop geometry of :attr:`preprocess`."""
        return preprocess_transform(self.preprocess)

    def decode(self, source: ImageSource) -> LoadedImage:
        """Step 1 only: the decoded, oriented RGB working image."""
        return decode_image(
            source,
            max_pixels=self.max_pixels,
            min_size=_decode_request(self.preprocess) if self.draft else None,
            min_side=self.min_working_side if self.draft else None,
            orientation=self.orientation,
        )

    def from_loaded(self, loaded: LoadedImage) -> Prepared:
        """Steps 2-3 on an already decoded image."""
        work = loaded.image.size
        g = self.transform.geometry(loaded.original_size, working_size=work, orientation=loaded.orientation)
        return Prepared(image_to_tensor(loaded.image, self.preprocess, g), g, loaded.image, loaded.path)

    def __call__(self, source: ImageSource) -> Prepared:
        """Decode ``source`` (path, bytes, ``uint8`` array or PIL image) into a :class:`Prepared`."""
        return self.from_loaded(self.decode(source))

    def geometry(self, image_size: tuple[int, int], **kwargs: Any) -> Geometry:
        """The geometry of an image of ``image_size`` (original frame) decoded without reduction."""
        return self.transform.geometry(image_size, **kwargs)
