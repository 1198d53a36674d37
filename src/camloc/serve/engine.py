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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from camloc._checks import check_number, fail
from camloc.errors import CamlocValueError, ImageLoadError

__all__ = [
    "ClassMap",
    "Engine",
    "ModelSource",
    "UnknownUploadError",
    "method_names",
    "parse_classes",
]


def method_names() -> tuple[str, ...]:
    """The methods the server offers (``method=`` of ``POST /api/explain``): every method of ``camloc methods``,
    aliases (``best``) and methods added by ``register_method`` included, read at call time."""
    from camloc.methods.registry import list_methods  # the table only: imports neither torch nor extras

    return tuple(name for name, _ in list_methods())


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
    #: (method, _args_key) -> producer, least recently used first; at most MAX_PRODUCERS are kept
    producers: OrderedDict[tuple[str, Any], Any] = field(default_factory=OrderedDict)
    method_lock: threading.Lock = field(default_factory=threading.Lock)  # map methods run one at a time


@dataclass(frozen=True)
class _Entry:
    features: Any  # Tensor[K, h, w] float32 on cpu (cam); for other methods the network input [3, H, W]
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


#: Map-method producers kept per served model (a ``dilate`` producer holds a copy of the model).
MAX_PRODUCERS = 8


def _refuse_server_paths(method: str, args: Mapping[str, Any]) -> None:
    """A client may not make the server read its own files: refuse a non-empty path-valued method argument
    (``ddt fit=FOLDER``), also inside nested ``base`` methods; a calibration file's own arguments are allowed."""
    from camloc.methods.registry import method_entry

    for p in method_entry(method).params:
        value = args.get(p.name)
        if p.server_path and value:
            fail("method_args", f"no {p.name!r} for {method!r} in the web app (a path on the server)", f"{p.name}=...")
        if p.kind == "method" and isinstance(value, tuple):
            _refuse_server_paths(value[0], value[1])


def parse_classes(value: str | Sequence[int | str] | None, categories: Sequence[str]) -> list[int] | None:
    """``"3,cat,7"`` or ``[3, "cat"]`` -> class indices (names match case-insensitively); None or "" -> None."""
    if value is None:
        return None
    items: list[int | str] = (
        [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else list(value)
    )
    if not items:
        return None
    exact = {n: i for i, n in enumerate(categories)}
    by_name: dict[str, list[int]] = {}
    for i, n in enumerate(categories):
        by_name.setdefault(n.lower(), []).append(i)
    out = []
    for it in items:
        if isinstance(it, int) or (isinstance(it, str) and it.lstrip("-").isascii() and it.lstrip("-").isdigit()):
            idx = int(it)
            if not 0 <= idx < len(categories):
                fail("classes", f"class indices in [0, {len(categories)}) or class names", it)
        elif str(it) in exact:  # the exact spelling first: 'Cardigan' (the dog) is not 'cardigan' (the sweater)
            idx = exact[str(it)]
        else:
            found = by_name.get(str(it).lower(), [])
            if not found:
                fail("classes", "class indices or names of the model's categories", it)
            if len(found) > 1:
                spelled = ", ".join(f"{categories[i]!r} ({i})" for i in found)
                fail("classes", f"one class; {it!r} matches {spelled}: use the exact spelling or the index", it)
            idx = found[0]
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
        calibration: a :class:`camloc.calibrate.Calibration` or its ``calib.json``: requests for its method (with
            no method arguments, or its own) get boxes by its rule instead of the paper's at ``threshold``.
    """

    def __init__(
        self,
        sources: Sequence[ModelSource],
        *,
        device: str = "cpu",
        cache_size: int = 64,
        display_max_side: int = 512,
        max_pixels: int | None = None,
        calibration: Any = None,
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
        if calibration is not None:
            from camloc.calibrate import Calibration, load_calibration

            if not isinstance(calibration, Calibration):
                calibration = load_calibration(calibration)
        self.calibration = calibration
        self._calibration_key: tuple[str, Any] | None = None  # (method, _args_key) the calibration applies to
        if calibration is not None:
            from camloc.methods.registry import resolve_method

            full = resolve_method(calibration.method, calibration.method_args)[1]
            self._calibration_key = (calibration.method, _args_key(full))
        self._models: dict[str, _Loaded] = {}
        self._load_lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str, str, Any], _Entry] = OrderedDict()
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
        method_args: str | Mapping[str, Any] | None = None,
        overlay: bool = True,
    ) -> dict[str, Any]:
        """One upload -> the ``results.jsonl`` object of ``camloc explain`` plus serving fields.

        Returns ``{"path", "width", "height", "topk": [{"rank", "class_idx", "name", "prob", "box"}], "hash",
        "model", "method", "method_args", "threshold", "box_rule", "calibrated", "network_size", "extent",
        "map_size", "overlay_png"}``; ``classes`` (indices or names) replaces the top-``topk`` classes;
        ``method`` is any name of ``camloc methods`` with ``method_args`` (``"k=v;k=v"`` or a mapping);
        ``overlay_png`` is a ``data:image/png;base64`` URL of the first class's map over the photo (longest side
        ``display_max_side``) with its box, or None. Boxes follow the calibration's rule when it applies
        (``calibrated``), else the paper's largest component at ``threshold``; ``box_rule`` says which.
        Raises :class:`~camloc.errors.ImageLoadError` for bytes that do not decode and
        :class:`~camloc.errors.CamlocValueError` for bad parameters.
        """
        import torch

        from camloc.cam import normalize_maps, upsample_maps
        from camloc.explain import ClassBox, ImageResult
        from camloc.localization import localize

        name = self.model_name(model)
        margs, key = self._method_args(method, method_args)
        check_number("topk", topk, low=1, integer=True)
        check_number("threshold", threshold, low=0.0, high=1.0)
        if not isinstance(data, bytes | bytearray) or not data:
            raise ImageLoadError(f"{filename}: empty upload")
        m = self._get(name)
        wanted = parse_classes(classes, m.info.categories)
        if wanted is None:
            topk = min(topk, m.info.num_classes)
        rule = self._rule(method, key)
        item = m.pipeline(bytes(data))
        digest = hashlib.sha256(data).hexdigest()
        x = item.tensor[None].to(self.device)
        with torch.no_grad():
            if method == "cam" and not margs:
                with m.lock or _NULL:
                    feats, logits = m.cam.forward(x)
                    probs = logits.float().softmax(dim=1)[0]
                    cls = probs.topk(topk).indices if wanted is None else torch.tensor(wanted, device=probs.device)
                    maps = m.cam.maps(feats, cls[None]).float()
                kept = feats[0].float().cpu()
            else:
                producer = self._producer(m, method, margs, key)
                with m.method_lock:
                    want = None if wanted is None else torch.tensor([wanted], device=x.device)
                    out = producer(x, classes=want, topk=topk)
                probs = out.logits.float().softmax(dim=1)[0]
                cls, maps = out.classes[0], out.maps.float()
                kept = x[0].float().cpu()
        net = (int(x.shape[2]), int(x.shape[3]))
        up = upsample_maps(maps, net)
        net_boxes = localize(up, threshold=threshold).boxes[0].cpu().numpy() if rule is None else rule.boxes(up)[0]
        boxes = item.geometry.map_boxes(net_boxes, "network", "original").tolist()
        cls_l = cls.cpu().tolist()
        tk = tuple(
            ClassBox(r + 1, c, m.info.categories[c], float(probs[c]), tuple(float(v) for v in b))  # type: ignore[arg-type]
            for r, (c, b) in enumerate(zip(cls_l, boxes))
        )
        result = ImageResult(Path(filename), item.original_size, tk).to_dict()
        result["path"] = filename  # the upload's name as sent (no path normalisation)
        self._remember((digest, name, method, key), _Entry(kept, probs.cpu(), item.geometry, filename))
        extent = self._extent(item.geometry, net)
        result.update(
            hash=digest,
            model=name,
            method=method,
            method_args={k: _plain(v) for k, v in margs.items()},
            threshold=threshold,
            box_rule=rule.describe() if rule is not None else f"largest component, threshold {threshold:g} of the max",
            calibrated=rule is not None,
            network_size=list(net),
            map_size=[int(maps.shape[2]), int(maps.shape[3])],
            extent=[round(v, 4) for v in extent],
            overlay_png=None,
        )
        if overlay:
            norm = normalize_maps(maps[0, :1], mode="max")[0].cpu().numpy()
            result["overlay_png"] = self._overlay(item, norm, tk[0])
        return result

    def _method_args(
        self, method: str, method_args: str | Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], tuple[tuple[str, str], ...]]:
        """The request's method arguments, checked (errors name ``method`` / ``method_args``), and their
        :func:`_args_key`; a request for the calibration's method without arguments gets the calibration's."""
        from camloc.methods.registry import parse_method_args, resolve_method, split_args

        if isinstance(method_args, str):
            margs: dict[str, Any] = parse_method_args(split_args(method_args), option="method_args")
        elif method_args is None:
            margs = {}
        elif isinstance(method_args, Mapping):
            margs = dict(method_args)
        else:
            fail("method_args", "'k=v;k=v' or a mapping", method_args, type_error=True)
        names = method_names()
        if not isinstance(method, str) or method not in names:
            fail("method", f"one of {list(names)}", method)
        cal = self.calibration
        from_client = bool(margs)
        if not margs and cal is not None and method == cal.method:
            margs = dict(cal.method_args)
        full = resolve_method(method, margs, names=("method", "method_args"))[1]
        if from_client:
            _refuse_server_paths(method, full)
        return margs, _args_key(full)

    def _rule(self, method: str, key: tuple[tuple[str, str], ...]) -> Any:
        """The calibration's box rule when the request is for its method with its arguments (``key``), else None."""
        cal = self.calibration
        return cal.rule if cal is not None and (method, key) == self._calibration_key else None

    def _producer(self, m: _Loaded, method: str, margs: Mapping[str, Any], key: tuple[tuple[str, str], ...]) -> Any:
        """The map method bound to a served model, built once per (method, arguments ``key``)."""
        from camloc.methods import get_method

        with m.method_lock:
            producer = m.producers.get((method, key))
            if producer is None:
                producer = m.producers[(method, key)] = get_method(method, m.model, m.info, **dict(margs))
                while len(m.producers) > MAX_PRODUCERS:  # clients choose arguments: keep memory bounded
                    m.producers.popitem(last=False)
            else:
                m.producers.move_to_end((method, key))
        return producer

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
    def _remember(self, key: tuple[str, str, str, Any], entry: _Entry) -> None:
        with self._cache_lock:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def cached(self) -> int:
        """How many ``(upload, model)`` results the cache holds."""
        with self._cache_lock:
            return len(self._cache)

    def class_map(
        self,
        digest: str,
        class_idx: int,
        *,
        model: str | None = None,
        method: str = "cam",
        method_args: str | Mapping[str, Any] | None = None,
    ) -> ClassMap:
        """The raw map of ``class_idx`` for a cached upload explained with ``method`` (and ``method_args``):
        for ``cam`` no new forward (the head on the cached features); other methods run again on the cached
        network input, for that class only.

        Raises :class:`UnknownUploadError` when ``digest`` (the ``hash`` of :meth:`explain`) is not cached for
        ``model`` and that method, and :class:`~camloc.errors.CamlocValueError` for a class index out of range.
        """
        import torch

        name = self.model_name(model)
        margs, args_key = self._method_args(method, method_args)
        key = (digest, name, method, args_key)
        with self._cache_lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._cache.move_to_end(key)
        if entry is None:
            raise UnknownUploadError(
                f"`hash` must name a recent upload explained with model {name!r} and method {method!r}; got "
                f"{digest!r} (not in the cache of the last {self.cache_size}; POST it to /api/explain again)"
            )
        m = self._get(name)
        c = m.info.num_classes
        if isinstance(class_idx, bool) or not isinstance(class_idx, int) or not 0 <= class_idx < c:
            fail("class_idx", f"a class index in [0, {c})", class_idx)
        want = torch.tensor([[class_idx]], device=self.device)
        with torch.no_grad():
            if method == "cam" and not margs:
                with m.lock or _NULL:
                    raw = m.cam.maps(entry.features[None].to(self.device), want)
            else:
                producer = self._producer(m, method, margs, args_key)
                with m.method_lock:
                    raw = producer(entry.features[None].to(self.device), classes=want).maps
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


def _args_key(full: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A method's checked arguments (``resolve_method``'s, defaults filled) as a hashable key (``"2"`` and ``2``
    are one key)."""
    return tuple(sorted((k, repr(v)) for k, v in full.items()))


def _plain(v: Any) -> Any:
    """A method argument as JSON: a nested method ``(name, {args})`` as ``"name(k=v;k=v)"``, other tuples as
    lists."""
    from camloc.methods.registry import format_method_value

    if isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], dict):
        return format_method_value(v)
    return list(v) if isinstance(v, tuple) else v


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NULL = _Null()
