"""Keras 3 image models ending in GlobalAveragePooling2D -> Dense (``pip install camloc[keras]``).

``camloc.CAM(keras_model)`` lands here (``import camloc`` never imports ``keras``). Supported: functional and
sequential models (``keras.applications`` included) whose output layer is a ``Dense`` with ``softmax`` or no
(``linear``) activation, fed by a ``GlobalAveragePooling2D`` (``Dropout`` layers in between are skipped). The
logits are the Dense layer's pre-activation ``p @ kernel + bias`` (taken before the softmax), the feature map is
the GAP layer's input (the last convolutional block), and the maps are the paper's ``M_c = sum_k kernel[k, c] f_k``
(:class:`DenseHead`, a :class:`~camloc.heads.LinearHead` on the Dense layer's live kernel).

Backends: on the **torch backend** (``KERAS_BACKEND=torch`` before keras is first imported) Keras layers are
``torch.nn.Module`` s and their variables torch parameters: the maps are computed on the model's own tensors (live
weights, on the model's device, differentiable with ``CAM(..., differentiable=True)``). On any other backend (JAX,
TensorFlow) the Keras sub-model up to the GAP layer runs on that backend and its features are converted to a
CPU float tensor (``keras.ops.convert_to_numpy``); the Dense kernel is read the same way at each call. Maps and
logits are then exactly as on torch, but not differentiable. camloc's inputs stay ``x [N, 3, H, W]`` (as
everywhere in camloc, so ``explain`` / ``evaluate`` pipelines work unchanged); they are permuted to the
channels-last ``[N, H, W, 3]`` a Keras model takes, and the ``[N, h, w, K]`` features back to ``[N, K, h, w]``.
The identity is checked against the model's own GAP output and Dense weights, and ``activation(logits)`` against
``model(x)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from camloc._checks import fail
from camloc.errors import UnsupportedModelError
from camloc.heads import LinearHead

__all__ = ["DenseHead", "keras_resolved"]


def _keras() -> Any:
    try:
        import keras
    except ImportError as e:  # pragma: no cover - keras is an optional extra
        raise UnsupportedModelError("Keras models need keras 3: pip install camloc[keras]") from e
    return keras


class DenseHead(LinearHead):
    r"""GAP, then a Keras ``Dense`` layer: :class:`~camloc.heads.LinearHead` on ``kernel [K, C]`` (read live).

    logit :math:`\sum_k \mathrm{kernel}_{kc}\,\mathrm{mean}_{xy} f_k + \mathrm{bias}_c` (before the activation),
    map :math:`\sum_k \mathrm{kernel}_{kc} f_k`, offset :math:`\mathrm{bias}_c`.
    """

    def __init__(self, dense: Any) -> None:
        self.layer = dense
        self.module = dense  # the Keras layer (an nn.Module on the torch backend)
        self.pool = "avg"

    @property
    def weight(self) -> torch.Tensor:
        """``Tensor[C, K]``: the transposed kernel (a live view of the Keras variable)."""
        return _tensor(self.layer.kernel).T

    @property
    def bias(self) -> torch.Tensor | None:
        b = getattr(self.layer, "bias", None)
        return None if b is None else _tensor(b)

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.layer,) if isinstance(self.layer, nn.Module) else ()

    def describe(self) -> str:
        return "GlobalAveragePooling2D -> Dense"


def _tensor(v: Any) -> torch.Tensor:
    """A Keras variable or backend tensor as a torch tensor: the tensor itself on the torch backend, else a CPU
    copy of its current value."""
    t = getattr(v, "value", v)
    if isinstance(t, torch.Tensor):
        return t
    return torch.from_numpy(np.array(_keras().ops.convert_to_numpy(t)))


def _producer(model: Any, tensor: Any) -> Any:
    """The layer of ``model`` whose output is the symbolic ``tensor``."""
    for layer in model.layers:
        try:
            if layer.output is tensor:
                return layer
        except (AttributeError, ValueError):  # layers with several outputs or never called
            continue
    return None


def _activation_name(layer: Any) -> str:
    act = getattr(layer, "activation", None)
    return str(getattr(act, "__name__", act))


def keras_resolved(model: Any, *, features: Any = None, classifier: Any = None, pool: Any = None) -> Any:
    """A :class:`~camloc.resolve.ResolvedHead` for a Keras 3 model (module docstring for what is supported)."""
    from camloc.resolve import ResolvedHead

    keras = _keras()
    backend = keras.config.backend()
    on_torch = backend == "torch"
    if on_torch and not isinstance(model, nn.Module):  # pragma: no cover - keras 3 on torch builds modules
        raise UnsupportedModelError(f"Keras model {type(model).__name__} is not a torch module on the torch backend")
    if features is not None or classifier is not None or pool not in (None, "avg"):
        fail("features/classifier/pool", "left out for a Keras model (its GAP -> Dense head is found)", "given")
    name = f"keras {type(model).__name__} {getattr(model, 'name', '')!r}"
    layers = list(getattr(model, "layers", []))
    dense = layers[-1] if layers else None
    if not isinstance(dense, keras.layers.Dense):
        raise UnsupportedModelError(
            f"{name} does not end in a Dense layer (found {type(dense).__name__}); CAM needs "
            "GlobalAveragePooling2D -> Dense"
        )
    act = _activation_name(dense)
    if act not in ("softmax", "linear"):
        raise UnsupportedModelError(
            f"{name}'s Dense layer has activation {act!r}; camloc takes the logits before a softmax or no activation"
        )
    cur = _producer(model, dense.input)
    while isinstance(cur, keras.layers.Dropout):
        cur = _producer(model, cur.input)
    if not isinstance(cur, keras.layers.GlobalAveragePooling2D):
        raise UnsupportedModelError(
            f"{name}: the Dense layer is fed by {type(cur).__name__}, not GlobalAveragePooling2D, so a class "
            "activation map is not defined (a hidden Dense layer or Flatten after the features). Rebuild the head "
            "as GlobalAveragePooling2D -> Dense and fine-tune it."
        )
    gap = cur
    channels_last = getattr(gap, "data_format", "channels_last") == "channels_last"
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # one tensor in, as it is called
    trunk_model = keras.Model(inputs, gap.input)
    pooled_model = keras.Model(inputs, gap.output)

    def to_input(x: torch.Tensor) -> Any:
        x = x.permute(0, 2, 3, 1) if channels_last else x
        return x if on_torch else x.detach().cpu().numpy()

    def run(sub: Any, x: torch.Tensor) -> torch.Tensor:
        out = sub(to_input(x))
        return out if on_torch else _tensor(out).to(x.device)

    def trunk(x: torch.Tensor) -> torch.Tensor:
        f = run(trunk_model, x)
        return f.permute(0, 3, 1, 2) if channels_last else f

    head = DenseHead(dense)

    def reference(x: torch.Tensor) -> torch.Tensor:
        # The model's own pooling and Dense weights; the model's output must be activation(logits).
        p = run(pooled_model, x).flatten(1)
        logits = p @ _tensor(dense.kernel).to(p)
        if dense.bias is not None:
            logits = logits + _tensor(dense.bias).to(p)
        probs = run(model, x)
        expect = logits.softmax(dim=1) if act == "softmax" else logits
        if not isinstance(probs, torch.Tensor) or probs.shape != expect.shape:
            raise UnsupportedModelError(f"{name}: model(x) is not the Dense layer's output")
        tol = 1e-5 if probs.dtype in (torch.float32, torch.float64) else 1e-2
        if float((probs.double() - expect.double()).abs().max()) > tol * max(1.0, float(expect.abs().max())):
            raise UnsupportedModelError(f"{name}: model(x) differs from {act}(GAP -> Dense); not a GAP head")
        return logits

    source = f"{name} (GlobalAveragePooling2D -> Dense, {act}; {backend} backend)"
    return ResolvedHead(model, trunk, head, source, True, None, reference, False)
