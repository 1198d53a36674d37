"""Map methods as plug-ins: one interface (see :mod:`camloc.methods.base`), one table, one flag.

::

    from camloc.methods import get_method, list_methods
    producer = get_method("flip", model, info)                 # or "multiscale", "pca", "gradcam", ...
    out = producer(x, topk=5)                                  # a camloc.CamResult, as camloc.CAM(model)(x)
    producer = get_method("multiscale", model, info, scales=(1.0, 1.5), flip=True)

``camloc methods`` lists them; ``--method NAME --method-arg k=v`` selects one in ``explain`` and ``evaluate``.
"""

from __future__ import annotations

from camloc.methods.registry import (
    ALIASES,
    BUILTIN,
    MethodEntry,
    Param,
    get_method,
    list_methods,
    make_producer,
    method_entry,
    parse_method_args,
    register_method,
    resolve_method,
)

__all__ = [
    "ALIASES",
    "BUILTIN",
    "MethodEntry",
    "Param",
    "get_method",
    "list_methods",
    "make_producer",
    "method_entry",
    "parse_method_args",
    "register_method",
    "resolve_method",
]
