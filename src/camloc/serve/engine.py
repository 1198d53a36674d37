"""The serving engine: models loaded once per name, uploads explained, recent uploads cached by content hash.

No web framework here: :class:`Engine` is plain Python, thread-safe, and is what the FastAPI app
(:mod:`camloc.serve.app`) runs in its worker pool.

Conventions (the same as ``camloc explain``): the whole photo is resized to the network input; the maps of the
chosen classes are upsampled (bilinear, pixel-centre aligned) to the network input, normalised by their max,
thresholded at ``threshold`` and the largest 8-connected component's box is mapped to original pixels (after the
EXIF orientation). Box convention: xyxy float pixel coordinates, pixel (row i, col j) covers [j, j+1) x [i, i+1),
``(0, 0, 0, 0)`` = no box.

So that a client can re-threshold without the server, every result also carries ``network_size = [H, W]`` and
``extent = [x0, y0, x1, y1]``: the network input's rectangle in original pixels (the whole photo for
``resize="full"``; the centre crop for ``"center_crop"``). A box ``b`` in network pixels is
``x0 + b_x * (x1 - x0) / W`` (and likewise for y), clipped to the photo.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from camloc._checks import check_number, fail
from camloc.errors import CamlocValueError, ImageLoadError

__all__ = [
    "METHODS",
    "ClassMap",
    "Engine",
    "ModelSource",
    "UnknownUploadError",
    "parse_classes",
]

#: Explanation methods the server offers (``method=`` of ``POST /api/explain``).
METHODS: tuple[str, ...] = ("cam",)


class UnknownUploadError(CamlocValueError):
    """A map was asked for an upload that is not (or no longer) in the cache."""


@dataclass(frozen=True)
class ModelSource:
    """Where a served model comes from: a ``create_model`` spec (``lite0``, ``timm:NAME`` ...) or a checkpoint."""

    name: str
    spec: str | None = None
    checkpoint: Path | None = None
    weights: Path | None = None

    @classmethod
    def parse(cls, spec: str) -> ModelSource:
        return cls(name=spec, spec=spec)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> ModelSource:
        p = Path(path)
        return cls(name=p.stem, checkpoint=p)


@dataclass
class _Loaded:
    name: str
    model: Any
    info: Any
    cam: Any
    pipeline: Any
    lock: threading.Lock | None  # the hook path (temporary forward hooks) is not re-entrant: one forward at a time


@dataclass(frozen=True)
class _Entry:
    features: Any  # Tensor[K, h, w] float32 on cpu
    probs: Any  # Tensor[C] float32 softmax
    geometry: Any
    filename: str


@dataclass(frozen=True)
class ClassMap:
    """The raw map of one class of one cached upload.

    Attributes:
        raw: ``float32 [h, w]`` at feature resolution (for CAM: ``M_c = sum_k w_k^c f_k``, no ReLU, no bias).
        network_size: ``(H, W)`` of the network input the map stretches over (and is upsampled to before
            thresholding).
        extent: the network input's rectangle ``(x0, y0, x1, y1)`` in original pixels.
        image_size: the photo's ``(width, height)`` after the EXIF orientation.
    """

    class_idx: int
    name: str
    prob: float
    raw: np.ndarray
    network_size: tuple[int, int]
    extent: tuple[float, float, float, float]
    image_size: tuple[int, int]

    def normalized(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """``float32 [H, W]`` in ``[0, 1]``: upsampled to ``size`` (default: the network input), then ``/ max``."""
        import torch

        from camloc.cam import normalize_maps, upsample_maps

        m = torch.from_numpy(self.raw)[None, None]
        return normalize_maps(upsample_maps(m, size or self.network_size), mode="max")[0, 0].numpy()

    def to_dict(self) -> dict[str, Any]:
        h, w = self.raw.shape
        return {
            "class_idx": self.class_idx,
            "name": self.name,
            "prob": round(self.prob, 6),
            "shape": [h, w],
            "data": [round(float(v), 6) for v in self.raw.ravel()],
            "network_size": list(self.network_size),
            "extent": [round(v, 4) for v in self.extent],
            "width": self.image_size[0],
            "height": self.image_size[1],
        }


def parse_classes(value: str | Sequence[int | str] | None, categories: Sequence[str]) -> list[int] | None:
    """``"3,cat,7"`` or ``[3, "cat"]`` -> class indices (names match case-insensitively); None or "" -> None."""
    if value is None:
        return None
    items: list[int | str] = (
        [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else list(value)
    )
    if not items:
        return None
    by_name = {n.lower(): i for i, n in enumerate(categories)}
    out = []
    for it in items:
        if isinstance(it, int) or (isinstance(it, str) and it.lstrip("-").isdigit()):
            idx = int(it)
            if not 0 <= idx < len(categories):
                fail("classes", f"class indices in [0, {len(categories)}) or class names", it)
        else:
            key = str(it).lower()
            if key not in by_name:
                fail("classes", "class indices or names of the model's categories", it)
            idx = by_name[key]
        out.append(idx)
    return out


def _png_data_url(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=False, compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class Engine:
    """Explain uploads with a fixed set of models; thread-safe.

    Args:
        sources: the models served, the first is the default. Each is loaded once, on first use (or by
            :meth:`load_all`).
        device: torch device of the models.
        cache_size: how many ``(upload, model)`` results to keep for :meth:`class_map` (LRU); each holds the
            trunk features ``[K, h, w]`` (e.g. 1280 x 7 x 7 float32 = 250 kB for lite0).
        display_max_side: longest side of the overlay PNG returned by :meth:`explain`.
        max_pixels: decompression-bomb guard of the decoder.
    """

    def __init__(
        self,
        sources: Sequence[ModelSource],
        *,
        device: str = "cpu",
        cache_size: int = 64,
        display_max_side: int = 512,
        max_pixels: int | None = None,
    ) -> None:
        if not sources:
            fail("sources", "at least one model", sources)
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            fail("sources", "models with distinct names", names)
        check_number("cache_size", cache_size, low=1, integer=True)
        check_number("display_max_side", display_max_side, low=16, integer=True)
        self.sources = {s.name: s for s in sources}
        self.default_model = names[0]
        self.device = device
        self.cache_size = cache_size
        self.display_max_side = display_max_side
        self.max_pixels = max_pixels
        self._models: dict[str, _Loaded] = {}
        self._load_lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def model_names(self) -> list[str]:
        return list(self.sources)

    def model_name(self, name: str | None) -> str:
        """``name`` checked against the served models (None or "" -> the default)."""
        if not name:
            return self.default_model
        if name not in self.sources:
            fail("model", f"one of the served models {self.model_names}", name)
        return name

    def load_all(self) -> None:
        """Load every model now (e.g. before the server starts listening, so a bad spec fails early)."""
        for name in self.sources:
            self._get(name)

    def get_model(self, model: str | None = None) -> tuple[Any, Any]:
        """``(model, info)`` of a served model, loading it on first use."""
        m = self._get(self.model_name(model))
        return m.model, m.info

    def categories(self, model: str | None = None) -> tuple[str, ...]:
        return tuple(self._get(self.model_name(model)).info.categories)

    def _get(self, name: str) -> _Loaded:
        loaded = self._models.get(name)
        if loaded is not None:
            return loaded
        with self._load_lock:
            loaded = self._models.get(name)
            if loaded is None:
                loaded = self._load(self.sources[name])
                self._models[name] = loaded
        return loaded

    def _load(self, src: ModelSource) -> _Loaded:
        from camloc.data.images import DEFAULT_MAX_PIXELS
        from camloc.extractor import CAM
        from camloc.pipeline import ImagePipeline

        if src.checkpoint is not None:
            from camloc.checkpoint import load_checkpoint

            model, info = load_checkpoint(src.checkpoint)
        else:
            from camloc.models.registry import create_model

            assert src.spec is not None
            model, info = create_model(src.spec, weights=src.weights)
        model = model.to(self.device).eval()
        cam = CAM(model)
        pipe = ImagePipeline(
            info.preprocess,
            max_pixels=self.max_pixels or DEFAULT_MAX_PIXELS,
            min_working_side=self.display_max_side,
        )
        lock = threading.Lock() if cam.resolved.feature_module is not None else None
        return _Loaded(src.name, model, info, cam, pipe, lock)

    # ------------------------------------------------------------------------------------------------ explain
    def explain(
        self,
        data: bytes,
        *,
        filename: str = "upload",
        model: str | None = None,
        topk: int = 5,
        threshold: float = 0.2,
        classes: str | Sequence[int | str] | None = None,
        method: str = "cam",
        overlay: bool = True,
    ) -> dict[str, Any]:
        """One upload -> the ``results.jsonl`` object of ``camloc explain`` plus serving fields.

        Returns ``{"path", "width", "height", "topk": [{"rank", "class_idx", "name", "prob", "box"}], "hash",
        "model", "method", "threshold", "network_size", "extent", "map_size", "overlay_png"}``; ``classes`` (indices
        or names) replaces the top-``topk`` classes; ``overlay_png`` is a ``data:image/png;base64`` URL of the
        first class's map over the photo (longest side ``display_max_side``) with its box, or None.
        Raises :class:`~camloc.errors.ImageLoadError` for bytes that do not decode and
        :class:`~camloc.errors.CamlocValueError` for bad parameters.
        """
        import torch

        from camloc.cam import normalize_maps, upsample_maps
        from camloc.explain import ClassBox, ImageResult
        from camloc.localization import localize

        name = self.model_name(model)
        if method not in METHODS:
            fail("method", f"one of {list(METHODS)}", method)
        check_number("topk", topk, low=1, integer=True)
        check_number("threshold", threshold, low=0.0, high=1.0)
        if not isinstance(data, bytes | bytearray) or not data:
            raise ImageLoadError(f"{filename}: empty upload")
        m = self._get(name)
        wanted = parse_classes(classes, m.info.categories)
        if wanted is None:
            topk = min(topk, m.info.num_classes)
        item = m.pipeline(bytes(data))
        digest = hashlib.sha256(data).hexdigest()
        x = item.tensor[None].to(self.device)
        with torch.no_grad(), m.lock or _NULL:
            feats, logits = m.cam.forward(x)
            probs = logits.float().softmax(dim=1)[0]
            cls = probs.topk(topk).indices if wanted is None else torch.tensor(wanted, device=probs.device)
            maps = m.cam.maps(feats, cls[None]).float()
        net = (int(x.shape[2]), int(x.shape[3]))
        loc = localize(upsample_maps(maps, net), threshold=threshold)
        boxes = item.geometry.map_boxes(loc.boxes[0].cpu().numpy(), "network", "original").tolist()
        cls_l = cls.cpu().tolist()
        tk = tuple(
            ClassBox(r + 1, c, m.info.categories[c], float(probs[c]), tuple(float(v) for v in b))  # type: ignore[arg-type]
            for r, (c, b) in enumerate(zip(cls_l, boxes))
        )
        result = ImageResult(Path(filename), item.original_size, tk).to_dict()
        result["path"] = filename  # the upload's name as sent (no path normalisation)
        self._remember(digest, name, _Entry(feats[0].float().cpu(), probs.cpu(), item.geometry, filename))
        extent = self._extent(item.geometry, net)
        result.update(
            hash=digest,
            model=name,
            method=method,
            threshold=threshold,
            network_size=list(net),
            map_size=[int(maps.shape[2]), int(maps.shape[3])],
            extent=[round(v, 4) for v in extent],
            overlay_png=None,
        )
        if overlay:
            norm = normalize_maps(maps[0, :1], mode="max")[0].cpu().numpy()
            result["overlay_png"] = self._overlay(item, norm, tk[0])
        return result

    def _overlay(self, item: Any, norm_map: np.ndarray, top: Any) -> str:
        from PIL import Image

        from camloc.viz import draw_boxes, overlay

        img = item.image
        w, h = img.size
        s = min(1.0, self.display_max_side / max(w, h))
        if s < 1.0:
            img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR, reducing_gap=2.0)
        ow, oh = item.original_size
        sx, sy = img.size[0] / ow, img.size[1] / oh
        disp = np.asarray(img, dtype=np.uint8)
        ov = overlay(disp, norm_map, alpha=0.5)  # the map stretches over the whole photo, as the input does
        b = top.box
        ov = draw_boxes(ov, [[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]], labels=[f"{top.name} {top.prob:.2f}"],
                        colors=(255, 255, 255))  # fmt: skip
        return _png_data_url(ov)

    @staticmethod
    def _extent(geometry: Any, net: tuple[int, int]) -> tuple[float, float, float, float]:
        r = geometry.map_boxes(np.array([[0.0, 0.0, net[1], net[0]]]), "network", "original", clip=False)[0]
        return (float(r[0]), float(r[1]), float(r[2]), float(r[3]))

    # ------------------------------------------------------------------------------------------------ cache
    def _remember(self, digest: str, model: str, entry: _Entry) -> None:
        with self._cache_lock:
            self._cache[(digest, model)] = entry
            self._cache.move_to_end((digest, model))
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def cached(self) -> int:
        """How many ``(upload, model)`` results the cache holds."""
        with self._cache_lock:
            return len(self._cache)

    def class_map(self, digest: str, class_idx: int, *, model: str | None = None) -> ClassMap:
        """The raw map of ``class_idx`` for a cached upload (no new forward: the head on the cached features).

        Raises :class:`UnknownUploadError` when ``digest`` (the ``hash`` of :meth:`explain`) is not cached for
        ``model``, and :class:`~camloc.errors.CamlocValueError` for a class index out of range.
        """
        import torch

        name = self.model_name(model)
        with self._cache_lock:
            entry = self._cache.get((digest, name))
            if entry is not None:
                self._cache.move_to_end((digest, name))
        if entry is None:
            raise UnknownUploadError(
                f"`hash` must name a recent upload explained with model {name!r}; got {digest!r} "
                f"(not in the cache of the last {self.cache_size}; POST it to /api/explain again)"
            )
        m = self._get(name)
        c = m.info.num_classes
        if isinstance(class_idx, bool) or not isinstance(class_idx, int) or not 0 <= class_idx < c:
            fail("class_idx", f"a class index in [0, {c})", class_idx)
        with torch.no_grad(), m.lock or _NULL:
            raw = m.cam.maps(entry.features[None].to(self.device), torch.tensor([[class_idx]], device=self.device))
        raw_np = np.ascontiguousarray(raw[0, 0].float().cpu().numpy(), dtype=np.float32)
        w, h = entry.geometry.crop_size
        return ClassMap(
            class_idx=class_idx,
            name=m.info.categories[class_idx],
            prob=float(entry.probs[class_idx]),
            raw=raw_np,
            network_size=(h, w),
            extent=self._extent(entry.geometry, (h, w)),
            image_size=entry.geometry.image_size,
        )


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NULL = _Null()
