"""Keras 3 models on backends other than torch (JAX here; TensorFlow too where installed), in a subprocess each:
Keras fixes its backend when first imported, and this process's keras runs on torch (tests/test_keras.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np, torch
    import camloc
    from camloc.errors import UnsupportedModelError

    keras.utils.set_random_seed(0)
    res = {"backend": keras.config.backend()}
    inp = keras.Input((20, 16, 3))
    f = keras.layers.Conv2D(6, 3, activation="relu")(inp)
    f = keras.layers.Conv2D(5, 3)(f)
    gap = keras.layers.GlobalAveragePooling2D()
    out = keras.layers.Dense(4, activation="softmax")(keras.layers.Dropout(0.2)(gap(f)))
    m = keras.Model(inp, out)
    cam = camloc.CAM(m)
    x = torch.randn(3, 3, 20, 16)
    r = cam(x, classes=torch.arange(4))
    feats = np.asarray(keras.Model(inp, f)(x.permute(0, 2, 3, 1).numpy()))
    kernel = np.asarray(keras.ops.convert_to_numpy(m.layers[-1].kernel))
    bias = np.asarray(keras.ops.convert_to_numpy(m.layers[-1].bias))
    hand = np.einsum("nhwk,kc->nchw", feats, kernel)  # the Keras walkthrough's recipe
    probs = np.asarray(keras.ops.convert_to_numpy(m(x.permute(0, 2, 3, 1).numpy())))
    res["verified"] = bool(cam._verified)
    res["maps_shape"] = list(r.maps.shape)
    res["maps_err"] = float(np.abs(r.maps.numpy() - hand).max())
    res["probs_err"] = float(np.abs(r.logits.softmax(1).numpy() - probs).max())
    res["identity_err"] = float((r.maps.mean((2, 3)) + torch.from_numpy(bias) - r.logits).abs().max())
    res["source"] = cam.resolved.source
    hidden = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Dense(3)(gap(f))))
    try:
        camloc.CAM(hidden)
        res["refused"] = None
    except UnsupportedModelError as e:
        res["refused"] = str(e)
    app = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=3)
    ra = camloc.CAM(app)(torch.randn(2, 3, 32, 32))
    res["app_maps_shape"] = list(ra.maps.shape)
    print(json.dumps(res))
    """
)


@pytest.mark.parametrize("backend, module", [("jax", "jax"), ("tensorflow", "tensorflow")])
def test_keras_models_on_other_backends_give_the_same_exact_maps(backend: str, module: str, tmp_path: Path) -> None:
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec(module) is None:
        pytest.skip(f"keras on {backend} needs {module} (the Makefile installs jax)")
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    env.setdefault("JAX_PLATFORMS", "cpu")
    script = tmp_path / "keras_backend.py"
    script.write_text(SCRIPT)
    run = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", str(script)], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads(run.stdout.strip().splitlines()[-1])
    assert res["backend"] == backend
    assert res["verified"], "checked against the model's own GAP output, Dense weights and softmax"
    assert f"{backend} backend" in res["source"]
    assert res["maps_shape"] == [3, 4, 16, 12]
    assert res["maps_err"] < 1e-5
    assert res["probs_err"] < 1e-6
    assert res["identity_err"] < 1e-5
    assert res["refused"] is not None and "not GlobalAveragePooling2D" in res["refused"]
    assert res["app_maps_shape"] == [2, 3, 1, 1], "keras.applications MobileNetV2 at 32 px: top-3 of 3 classes, 1x1"
