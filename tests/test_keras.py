"""Keras 3 models (torch backend) ending in GlobalAveragePooling2D -> Dense: exact maps, logits before the softmax."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = os.environ.get("KERAS_BACKEND") or "torch"  # before keras is first imported

import pytest
import torch

import camloc
from camloc.errors import CamlocValueError, UnsupportedModelError

keras = pytest.importorskip("keras")
if keras.config.backend() != "torch":  # pragma: no cover
    pytest.skip("keras was imported with another backend", allow_module_level=True)


def _check(model, size: int, atol: float) -> camloc.CamResult:
    cam = camloc.CAM(model)
    x = torch.randn(2, 3, size, size)  # camloc's NCHW; the model takes NHWC
    c = cam.head.num_classes
    out = cam(x, classes=torch.arange(c))
    assert cam._verified, "checked against the model's own GAP and Dense, and model(x)"
    dense = model.layers[-1]
    # The Keras walkthrough's recipe: features of the last conv block, Dense kernel[:, c].
    with torch.no_grad():
        f = keras.Model(model.inputs, _gap(model).input)(x.permute(0, 2, 3, 1))
        w = dense.kernel.value  # [K, C]
        hand = torch.einsum("nhwk,kc->nchw", f, w)
        probs = model(x.permute(0, 2, 3, 1))
    torch.testing.assert_close(out.maps, hand, rtol=1e-5, atol=atol)
    act = dense.activation.__name__
    torch.testing.assert_close(out.logits.softmax(1) if act == "softmax" else out.logits, probs, rtol=1e-5, atol=atol)
    gap = out.maps.mean((2, 3)) + cam.head.offset(out.classes)
    torch.testing.assert_close(gap, out.logits, rtol=1e-5, atol=atol)
    return out


def _gap(model):
    return next(layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D))


def test_sequential_gap_dense_without_activation():
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.Input((16, 20, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Conv2D(6, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(4),
        ]
    )
    cam = camloc.CAM(m)
    out = cam(torch.randn(2, 3, 16, 20), classes=torch.arange(4))
    assert out.maps.shape == (2, 4, 12, 16), "h, w of the channels-last features"
    torch.testing.assert_close(out.maps.mean((2, 3)) + m.layers[-1].bias.value, out.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("app", ["MobileNetV2", "ResNet50"])
def test_keras_applications_with_softmax(app):
    keras.utils.set_random_seed(0)
    m = getattr(keras.applications, app)(weights=None, input_shape=(64, 64, 3), classes=3)
    assert m.layers[-1].activation.__name__ == "softmax"
    out = _check(m, 64, 1e-4)
    assert out.maps.shape == (2, 3, 2, 2)


def test_functional_model_logits_are_taken_before_the_softmax():
    keras.utils.set_random_seed(1)
    inp = keras.Input((12, 12, 3))
    f = keras.layers.Conv2D(5, 3, padding="same")(inp)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(f))
    m = keras.Model(inp, out)
    res = _check(m, 12, 1e-5)
    assert not torch.allclose(res.logits.sum(1), torch.ones(2)), "logits, not probabilities"


def test_keras_heads_without_a_map_are_refused():
    inp = keras.Input((8, 8, 3))
    f = keras.layers.Conv2D(4, 3)(inp)
    flat = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(f)))
    with pytest.raises(UnsupportedModelError, match="not GlobalAveragePooling2D"):
        camloc.CAM(flat)
    hidden = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(f))))
    with pytest.raises(UnsupportedModelError, match="not GlobalAveragePooling2D"):
        camloc.CAM(hidden)
    sig = keras.Model(inp, keras.layers.Dense(2, activation="relu")(keras.layers.GlobalAveragePooling2D()(f)))
    with pytest.raises(UnsupportedModelError, match="activation 'relu'"):
        camloc.CAM(sig)
    with pytest.raises(CamlocValueError, match="left out for a Keras model"):
        camloc.CAM(flat, pool="max")
