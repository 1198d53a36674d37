"""The table of map methods: names, one-line descriptions, typed parameters and lazily imported factories.

Like the CLI's ``COMMANDS`` table, every built-in method is one row (:data:`BUILTIN`); its factory is a
``"module:function"`` string imported on first use, so listing and validating methods imports neither torch nor
the optional ``torchcam`` / ``grad-cam`` packages. :func:`register_method` adds a method at run time.

Parameters are typed (:class:`Param`): values given as strings (``--method-arg k=v``) are converted, Python
values are checked. Aliases (:data:`ALIASES`, e.g. ``best``) name a method with preset parameters; parameters
given by the caller override the preset's.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from camloc._checks import fail

__all__ = [
    "ALIASES",
    "BUILTIN",
    "MethodEntry",
    "Param",
    "format_method_value",
    "get_method",
    "list_methods",
    "make_producer",
    "method_entry",
    "parse_method_args",
    "parse_method_spec",
    "register_method",
    "resolve_method",
    "split_args",
]

Kind = Literal["float", "int", "bool", "str", "floats", "strs", "method"]
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Param:
    """One parameter of a method: ``kind`` sets how a string value is read (``floats`` / ``strs``: comma-separated;
    ``bool``: 1/0, true/false, yes/no, on/off; ``method``: a method name)."""

    name: str
    kind: Kind
    default: Any
    help: str = ""
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    #: the value names a file or folder on the machine running camloc (the web app refuses it from clients)
    server_path: bool = False

    def convert(self, value: Any, *, method: str, option: str) -> Any:
        """``value`` (a string from the command line, or a Python value) as this parameter's type."""
        bad = f"for {self.name!r} of method {method!r}: " + _expected(self)
        try:
            out = self._convert(value)
        except (TypeError, ValueError):
            fail(option, bad, f"{self.name}={value!r}")
        if self.choices is not None and (out not in self.choices):
            fail(option, bad, f"{self.name}={value!r}")
        nums = out if isinstance(out, tuple) else (out,)
        numbers = [v for v in nums if isinstance(v, int | float) and not isinstance(v, bool)]
        if any(not math.isfinite(v) for v in numbers):
            fail(option, bad.replace(": a number", ": a finite number"), f"{self.name}={value!r}")
        if self.low is not None and any(v < self.low for v in numbers):
            fail(option, bad, f"{self.name}={value!r}")
        if self.high is not None and any(v > self.high for v in numbers):
            fail(option, bad, f"{self.name}={value!r}")
        if self.kind == "method":
            name = out[0] if isinstance(out, tuple) else out
            if not isinstance(name, str) or name not in _names():
                fail(option, f"for {self.name!r} of method {method!r}: a method name ({', '.join(_names())})", value)
            if isinstance(out, tuple):  # checked now, not at build time; defaults filled: one canonical value
                out = (name, resolve_method(name, out[1], names=(option, option))[1])
        return out

    def _convert(self, v: Any) -> Any:
        k = self.kind
        if k == "float":
            if isinstance(v, bool):
                raise TypeError
            return float(v)
        if k == "int":
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise TypeError
            return int(v)
        if k == "bool":
            if isinstance(v, bool):
                return v
            if isinstance(v, str) and v.lower() in _TRUE + _FALSE:
                return v.lower() in _TRUE
            raise ValueError
        if k == "str":
            if not isinstance(v, str):
                raise TypeError
            return v
        if k in ("floats", "strs"):
            items = [s for s in v.split(",") if s.strip()] if isinstance(v, str) else list(v)
            if not items:
                raise ValueError
            if k == "floats":
                return tuple(float(s) for s in items if not isinstance(s, bool))
            if not all(isinstance(s, str) for s in items):
                raise TypeError
            return tuple(s.strip() for s in items)
        # method: a name, "name(k=v;k=v)", or (name, {args}) from Python / JSON
        if isinstance(v, tuple | list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], Mapping):
            return (v[0], dict(v[1])) if v[1] else v[0]
        if not isinstance(v, str):
            raise TypeError
        return parse_method_spec(v)


def _expected(p: Param) -> str:
    what = {
        "float": "a number",
        "int": "an integer",
        "bool": "true or false",
        "str": "a string",
        "floats": "comma-separated numbers",
        "strs": "comma-separated names",
        "method": "a method name or NAME(k=v;k=v)",
    }[p.kind]
    if p.choices:
        what = "one of " + ", ".join(p.choices)
    if p.low is not None and p.high is not None:
        what += f" (in [{p.low}, {p.high}])"
    elif p.low is not None:
        what += f" (>= {p.low})"
    elif p.high is not None:
        what += f" (<= {p.high})"
    return what


@dataclass(frozen=True)
class MethodEntry:
    """A row of the method table: ``factory(model, info, **args) -> producer`` (a callable or ``"module:func"``)."""

    name: str
    description: str
    factory: str | Callable[..., Any]
    params: tuple[Param, ...] = ()

    def build(self, model: Any, info: Any, args: Mapping[str, Any]) -> Any:
        f = self.factory
        if isinstance(f, str):
            module, _, func = f.partition(":")
            f = getattr(importlib.import_module(module), func)
        return f(model, info, **args)


#: Largest input enlargement a method accepts (8x a 224 px input is 1792 px); nested ``NAME(...)`` depth limit.
MAX_SCALE = 8.0
MAX_NESTING = 4

_BASE = Param("base", "method", "cam", "the method run on each view / member / input")
_SIGN = Param("sign", "str", "cam", "sign of the principal component: agree with the class map, or positive mass",
              choices=("cam", "mass"))  # fmt: skip
_M = "camloc.methods."
_VIEW_PARAMS = (
    Param("norm", "str", "none", "normalise each view's map before fusing", choices=("none", "max", "minmax")),
    Param("logits", "str", "views", "classes from the views' mean logits or from the input itself",
          choices=("views", "input")),
)  # fmt: skip

#: The built-in methods, in listing order.
BUILTIN: tuple[MethodEntry, ...] = (
    MethodEntry("cam", "class activation maps of the model's own GAP head (Zhou et al. 2016; the default)",
                _M + "basic:build_cam"),
    MethodEntry("backprop", "gradient saliency max_channel |d logit / d input| (Simonyan et al. 2014)",
                _M + "basic:build_backprop"),
    MethodEntry("flip", "test-time horizontal flip: maps flipped back, fused at input resolution; logits averaged",
                _M + "tta:build_tta",
                (_BASE, Param("flip", "bool", True), Param("scales", "floats", (1.0,), low=0.05, high=MAX_SCALE),
                 Param("fuse", "str", "mean", choices=("mean", "max")), *_VIEW_PARAMS)),
    MethodEntry("multiscale", "test-time scales (default 0.75,1,1.25): maps fused at input resolution",
                _M + "tta:build_tta",
                (_BASE, Param("flip", "bool", False),
                 Param("scales", "floats", (0.75, 1.0, 1.25), low=0.05, high=MAX_SCALE),
                 Param("fuse", "str", "mean", choices=("mean", "max")), *_VIEW_PARAMS)),
    MethodEntry("ensemble", "several registry models (default lite0,lite1,lite2): normalised maps averaged, "
                "probabilities averaged", _M + "tta:build_ensemble",
                (Param("models", "strs", ("lite0", "lite1", "lite2")), _BASE,
                 Param("norm", "str", "max", choices=("max", "minmax")))),
    MethodEntry("hires", "the base method on an input enlarged by `scale` (default 2): a finer map grid",
                _M + "resolution:build_hires",
                (Param("scale", "float", 2.0, low=0.05, high=MAX_SCALE), _BASE,
                 Param("logits", "str", "scaled", help="classify the enlarged input or the input itself",
                       choices=("scaled", "input")))),
    MethodEntry("dilate", "the last stride-2 stage(s) turned into dilation: 2x (4x) finer maps, same weights",
                _M + "resolution:build_dilate", (Param("stages", "int", 1, low=1, high=4), _BASE)),
    MethodEntry("affinity", "the class map of a 1.5x input spread by a random walk over a stride-16 layer's "
                "feature affinities", _M + "affinity:build_affinity",
                (Param("scale", "float", 1.5, "input enlargement for the maps and the affinities", low=0.05,
                       high=MAX_SCALE),
                 Param("layer", "str", "auto", "module whose features give the affinities (auto: the stride-16 "
                       "stage)"),
                 Param("beta", "float", 8.0, "affinity = max(0, cosine) ** beta", low=0.0, high=64.0),
                 Param("iters", "int", 4, "random-walk steps", low=0, high=64),
                 Param("logits", "str", "input", "classify the input itself or the enlarged input",
                       choices=("input", "scaled")))),
    MethodEntry("pca", "class-agnostic: first principal component of the image's features (CAM Back Again)",
                _M + "agnostic:build_pca", (_SIGN,)),
    MethodEntry("ddt", "class-agnostic: principal component of features over a set (DDT; batch, or fit=FOLDER)",
                _M + "agnostic:build_ddt", (_SIGN, Param("fit", "str", "", server_path=True),
                                           Param("limit", "int", 256, low=1, high=100_000))),
    MethodEntry("cam+pca", "class map combined with the principal-component map (combine=product|mean|max)",
                _M + "agnostic:build_cam_pca",
                (Param("combine", "str", "product", choices=("product", "mean", "max")),
                 Param("weight", "float", 0.5, low=0.0),
                 Param("norm", "str", "minmax", choices=("max", "minmax")),
                 _SIGN)),
    MethodEntry("gradcam", "Grad-CAM (torchcam) at camloc's trunk output", _M + "adapters:build_gradcam"),
    MethodEntry("gradcam++", "Grad-CAM++ (torchcam) at camloc's trunk output", _M + "adapters:build_gradcampp"),
    MethodEntry("scorecam", "Score-CAM (torchcam): one forward per feature channel, slow",
                _M + "adapters:build_scorecam", (Param("batch_size", "int", 32, low=1, high=4096),)),
    MethodEntry("layercam", "Layer-CAM (torchcam) at camloc's trunk output", _M + "adapters:build_layercam"),
    MethodEntry("eigencam", "Eigen-CAM (grad-cam): class-agnostic principal component, ReLU, min-max",
                _M + "adapters:build_eigencam"),
)  # fmt: skip

#: Preset aliases: name -> (method, preset arguments, description).
ALIASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "best": (
        "affinity",
        {"scale": 1.5, "beta": 8.0, "iters": 4, "logits": "input"},
        "the recommended method (README, `Map methods`)",
    ),
}

_REGISTRY: dict[str, MethodEntry] = {e.name: e for e in BUILTIN}


def _names() -> list[str]:
    return [*_REGISTRY, *ALIASES]


def register_method(
    name: str,
    factory: Callable[..., Any],
    *,
    description: str,
    params: Sequence[Param] = (),
) -> MethodEntry:
    """Add a method: ``factory(model, info, **args)`` returns a producer (see :mod:`camloc.methods.base`)."""
    if not isinstance(name, str) or not name or any(c.isspace() or c in "=," for c in name):
        fail("name", "a method name without spaces, '=' or ','", name)
    if name in _REGISTRY or name in ALIASES:
        fail("name", "a name not yet registered", repr(name))
    entry = MethodEntry(name, description, factory, tuple(params))
    _REGISTRY[name] = entry
    return entry


def list_methods() -> list[tuple[str, str]]:
    """Every method and alias: ``(name, one-line description)``, in listing order."""
    out = [(e.name, e.description) for e in _REGISTRY.values()]
    for name, (target, args, desc) in ALIASES.items():
        preset = ",".join(f"{k}={format_method_value(v)}" for k, v in args.items())
        out.append((name, f"{desc}: {target}" + (f" ({preset})" if preset else "")))
    return out


def format_method_value(v: Any) -> str:
    """A parameter value as ``--method-arg`` takes it: ``(name, {args})`` -> ``"name(k=v;k=v)"``, tuples
    comma-separated (the inverse of :func:`parse_method_spec` and of the ``floats`` / ``strs`` kinds)."""
    if isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], dict):
        return v[0] + "(" + ";".join(f"{k}={format_method_value(x)}" for k, x in v[1].items()) + ")"
    if isinstance(v, tuple):
        return ",".join(map(str, v))
    return str(v)


def method_entry(name: str, *, option: str = "method") -> MethodEntry:
    """The table row of ``name`` (an alias gives its target's row)."""
    if isinstance(name, str) and name in ALIASES:
        name = ALIASES[name][0]
    if not isinstance(name, str) or name not in _REGISTRY:
        fail(option, "one of " + ", ".join(_names()), repr(name) if isinstance(name, str) else name)
    return _REGISTRY[name]


def _check_nesting(text: str) -> None:
    """Refuse ``NAME(...)`` specs nested deeper than :data:`MAX_NESTING` (each level runs its base again)."""
    depth = deepest = 0
    for c in text:
        depth += (c == "(") - (c == ")")
        deepest = max(deepest, depth)
    if deepest > MAX_NESTING:
        fail("method_args", f"methods nested at most {MAX_NESTING} deep", repr(text[:80]))


def split_args(text: str, *, sep: str = ";") -> list[str]:
    """``text`` split at ``sep`` outside parentheses: ``"a=1;base=x(k=2;j=3)"`` -> ``["a=1", "base=x(k=2;j=3)"]``
    (empty items dropped). Unbalanced parentheses are a ``CamlocValueError`` naming ``method_args``."""
    _check_nesting(text)
    out: list[str] = []
    depth, start = 0, 0
    for i, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                break
        elif c == sep and depth == 0:
            out.append(text[start:i])
            start = i + 1
    if depth != 0:
        fail("method_args", "balanced parentheses, e.g. base=affinity(layer=blocks.3)", repr(text))
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


def parse_method_spec(text: str) -> str | tuple[str, dict[str, str]]:
    """A method value as written on the command line: ``"NAME"`` -> ``"NAME"``; ``"NAME(k=v;k=v)"`` ->
    ``("NAME", {"k": "v", ...})`` (values stay strings; nested specs are allowed). The inverse of how
    ``camloc methods`` shows such values."""
    text = text.strip()
    _check_nesting(text)
    if not text.endswith(")") or "(" not in text:
        if "(" in text or ")" in text:
            fail("method_args", "a method NAME or NAME(k=v;k=v)", repr(text))
        return text
    name, _, inner = text[:-1].partition("(")
    args = parse_method_args(split_args(inner), option="method_args")
    return (name.strip(), args) if args else name.strip()


def parse_method_args(items: Sequence[str] | None, *, option: str = "--method-arg") -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}`` (a later key wins)."""
    out: dict[str, str] = {}
    for item in items or ():
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            fail(option, "KEY=VALUE", repr(item))
        out[key.strip()] = value.strip()
    return out


def resolve_method(
    name: str,
    args: Mapping[str, Any] | None = None,
    *,
    names: tuple[str, str] = ("method", "method_args"),
) -> tuple[MethodEntry, dict[str, Any]]:
    """Check ``name`` and ``args`` (aliases expanded, strings converted, defaults filled); return the row and the
    full arguments. Errors name ``names[0]`` (unknown method) or ``names[1]`` (a bad argument)."""
    entry = method_entry(name, option=names[0])
    given: dict[str, Any] = {}
    if name in ALIASES:
        given.update(ALIASES[name][1])
    given.update(args or {})
    params = {p.name: p for p in entry.params}
    out = {p.name: p.default for p in entry.params}
    for key, value in given.items():
        if key not in params:
            valid = ", ".join(params) if params else "none"
            fail(names[1], f"parameters of method {entry.name!r} ({valid})", repr(key))
        out[key] = params[key].convert(value, method=entry.name, option=names[1])
    return entry, out


def get_method(name: str, model: Any, info: Any, **args: Any) -> Any:
    """A ready producer: method ``name`` (or an alias) bound to ``model`` / ``info`` with ``args``.

    The producer is called like :class:`camloc.CAM` and returns a :class:`camloc.CamResult`
    (see :mod:`camloc.methods.base`).
    """
    entry, full = resolve_method(name, args)
    return entry.build(model, info, full)


def make_producer(method: Any, model: Any, info: Any, method_args: Mapping[str, Any] | None = None) -> Any:
    """``method`` as a producer: a name (with ``method_args``) through :func:`get_method`, or a ready producer."""
    if isinstance(method, str):
        return get_method(method, model, info, **dict(method_args or {}))
    if callable(method) and hasattr(method, "forward") and hasattr(method, "maps"):
        if method_args:
            fail("method_args", "empty when `method` is a ready producer", dict(method_args))
        return method
    fail("method", "a method name or a producer (forward / maps / __call__)", method, type_error=True)
    raise AssertionError  # unreachable
