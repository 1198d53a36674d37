"""`camloc serve`: every endpoint and every error status, in-process (FastAPI TestClient), with the embedded lite0.

Reference values: the boxes and probabilities of `camloc.explain.explain_images` (what `camloc explain` writes) on
the same bundled photo; the client-side re-threshold rule is replayed here with camloc's own functions.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

import camloc
from camloc.errors import CamlocError
from camloc.serve.app import create_app
from camloc.serve.engine import Engine, ModelSource, parse_classes

ASSETS = Path(camloc.__file__).parent / "assets"
COFFEE = (ASSETS / "coffee.jpg").read_bytes()


@pytest.fixture(scope="module")
def engine() -> Engine:
    e = Engine([ModelSource.parse("lite0")], cache_size=8)
    e.load_all()
    return e


@pytest.fixture(scope="module")
def client(engine: Engine) -> TestClient:
    return TestClient(create_app(engine, max_upload_mb=1.0, workers=2))


@pytest.fixture(scope="module")
def coffee(client: TestClient) -> dict:
    r = client.post("/api/explain", files={"file": ("coffee.jpg", COFFEE, "image/jpeg")})
    assert r.status_code == 200, r.text
    return r.json()


def _png(w: int, h: int, seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header declares ``w x h`` pixels, with no pixel data: a decompression bomb's first bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------------------ endpoints
def test_health(client: TestClient) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["models"] == ["lite0"] and body["default_model"] == "lite0"
    from camloc.methods import list_methods

    assert body["methods"] == [n for n, _ in list_methods()] and {"cam", "best", "affinity"} <= set(body["methods"])
    assert body["max_upload_mb"] == 1.0 and body["calibration"] is None


def test_classes(client: TestClient) -> None:
    body = client.get("/api/classes").json()
    assert body["model"] == "lite0" and len(body["categories"]) == 1000
    assert body["categories"][967] == "espresso"


def test_explain_equals_camloc_explain(engine: Engine, coffee: dict) -> None:
    from camloc.explain import Explained, explain_images

    model, info = engine.get_model("lite0")
    [ref] = list(explain_images([ASSETS / "coffee.jpg"], model, info, topk=5, threshold=0.2))
    assert isinstance(ref, Explained)
    want = ref.result.to_dict()
    assert coffee["path"] == "coffee.jpg"
    assert (coffee["width"], coffee["height"]) == (want["width"], want["height"]) == (600, 400)
    assert [c["class_idx"] for c in coffee["topk"]] == [c["class_idx"] for c in want["topk"]]
    assert coffee["topk"][0]["name"] == "espresso"
    for got, exp in zip(coffee["topk"], want["topk"]):
        assert got["rank"] == exp["rank"] and got["name"] == exp["name"]
        assert got["prob"] == pytest.approx(exp["prob"], abs=1e-5)
        assert got["box"] == pytest.approx(exp["box"], abs=0.02)
    assert coffee["method"] == "cam" and coffee["model"] == "lite0" and coffee["threshold"] == 0.2
    assert coffee["network_size"] == [224, 224] and coffee["map_size"] == [7, 7]
    assert coffee["extent"] == [0.0, 0.0, 600.0, 400.0]  # lite0 resizes the whole photo
    assert len(coffee["hash"]) == 64 and coffee["map_url"].startswith(f"/api/map/{coffee['hash']}/")


def test_explain_with_a_map_method_equals_camloc_explain(engine: Engine, client: TestClient) -> None:
    """`method=affinity` (with arguments) gives `camloc explain --method affinity`'s classes and boxes; its map
    endpoint returns that method's map of any class (run again on the cached input)."""
    import torch

    from camloc.explain import explain_images
    from camloc.methods import get_method

    model, info = engine.get_model("lite0")
    margs = {"iters": "2", "layer": "blocks.3"}
    [ref] = list(explain_images([ASSETS / "coffee.jpg"], model, info, topk=3, method="affinity", method_args=margs))
    want = ref.result.to_dict()
    r = client.post("/api/explain", files={"file": ("coffee.jpg", COFFEE)},
                    data={"method": "affinity", "method_args": "iters=2; layer=blocks.3", "topk": "3"})  # fmt: skip
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["method"] == "affinity" and got["method_args"] == {"iters": "2", "layer": "blocks.3"}
    assert got["calibrated"] is False and got["box_rule"] == "largest component, threshold 0.2 of the max"
    assert [c["class_idx"] for c in got["topk"]] == [c["class_idx"] for c in want["topk"]]
    for g, e in zip(got["topk"], want["topk"]):
        assert g["prob"] == pytest.approx(e["prob"], abs=1e-5) and g["box"] == pytest.approx(e["box"], abs=0.02)
    assert got["map_size"] == [21, 21]  # the grid of blocks.3 (stride 16) on the 1.5x input (336 px)
    assert "method=affinity" in got["map_url"] and "method_args=" in got["map_url"]
    # the map of another class, from the method itself
    url = got["map_url"].replace("{class_idx}", "504") + "&format=json"
    m = client.get(url)
    assert m.status_code == 200, m.text
    cm = m.json()
    producer = get_method("affinity", model, info, iters=2, layer="blocks.3")
    x = engine._get("lite0").pipeline(COFFEE).tensor[None]
    exp = producer(x, classes=torch.tensor([[504]])).maps[0, 0].numpy()
    assert cm["shape"] == list(exp.shape)
    np.testing.assert_allclose(np.array(cm["data"]).reshape(exp.shape), exp, atol=1e-5)
    # the same arguments in another order and spelling name the same cached entry
    again = engine.class_map(got["hash"], 504, method="affinity", method_args={"layer": "blocks.3", "iters": 2})
    np.testing.assert_allclose(again.raw, np.array(cm["data"]).reshape(exp.shape), atol=1e-6)  # JSON: 6 digits
    # other arguments of the method were never explained for this upload
    other = client.get(f"/api/map/{got['hash']}/504?method=affinity&method_args=iters%3D3")
    assert other.status_code == 404 and "method 'affinity'" in other.json()["error"]


def test_a_wrapper_takes_its_base_method_with_arguments(engine: Engine) -> None:
    """`method_args` splits at ';' outside parentheses, so a wrapper's `base=NAME(k=v;k=v)` stays whole; any
    spelling of the same arguments gives the same key."""
    margs, key = engine._method_args("flip", "flip=1; base=affinity(iters=2;layer=blocks.3)")
    assert margs == {"flip": "1", "base": "affinity(iters=2;layer=blocks.3)"}
    _, same = engine._method_args("flip", {"base": ("affinity", {"layer": "blocks.3", "iters": 2}), "flip": True})
    assert key == same


def test_a_method_registered_at_run_time_is_served(engine: Engine, client: TestClient, coffee: dict) -> None:
    from camloc.extractor import CAM
    from camloc.methods import register_method

    name = "test-serve-cam"
    register_method(name, lambda model, info: CAM(model), description="cam, registered by a test")
    assert name in client.get("/api/health").json()["methods"]
    got = engine.explain(COFFEE, filename="coffee.jpg", method=name, overlay=False)
    np.testing.assert_allclose([c["box"] for c in got["topk"]], [c["box"] for c in coffee["topk"]], atol=1e-4)


def test_calibration_applies_to_its_method_only(engine: Engine) -> None:
    from camloc.boxes import BoxRule
    from camloc.calibrate import Calibration
    from camloc.explain import explain_images

    model, info = engine.get_model("lite0")
    rule = BoxRule(rule="mass", threshold=0.55)
    cal = Calibration(rule=rule, method="cam")
    e = Engine([ModelSource.parse("lite0")], cache_size=4, calibration=cal)
    e._models["lite0"] = engine._get("lite0")  # share the loaded model
    got = e.explain(COFFEE, filename="coffee.jpg", topk=3, overlay=False)
    [ref] = list(explain_images([ASSETS / "coffee.jpg"], model, info, topk=3, calibration=cal))
    assert got["calibrated"] is True and got["box_rule"] == rule.describe()
    for g, w in zip(got["topk"], ref.result.to_dict()["topk"]):
        assert g["box"] == pytest.approx(w["box"], abs=0.02)
    paper = engine.explain(COFFEE, filename="coffee.jpg", topk=3, overlay=False)
    assert got["topk"][0]["box"] != pytest.approx(paper["topk"][0]["box"], abs=1.0)  # the rule changed the box
    other = e.explain(COFFEE, filename="coffee.jpg", topk=3, method="best", overlay=False)
    assert other["calibrated"] is False  # fitted on cam's maps: not applied to another method's
    health = TestClient(create_app(e)).get("/api/health").json()
    assert health["calibration"] == {"method": "cam", "method_args": {}, "box_rule": rule.describe()}


def test_overlay_png_is_the_photo_at_display_size(coffee: dict) -> None:
    import base64

    from PIL import Image

    prefix = "data:image/png;base64,"
    assert coffee["overlay_png"].startswith(prefix)
    img = Image.open(io.BytesIO(base64.b64decode(coffee["overlay_png"][len(prefix) :])))
    assert img.format == "PNG" and img.size == (512, 341)  # 600 x 400 reduced to a longest side of 512


def test_explain_given_classes_by_index_and_name(client: TestClient, coffee: dict) -> None:
    r = client.post(
        "/api/explain",
        files={"file": ("c.jpg", COFFEE, "image/jpeg")},
        data={"classes": "cup, 504", "threshold": "0.2"},
    )
    assert r.status_code == 200, r.text
    got = r.json()["topk"]
    assert [(c["rank"], c["class_idx"], c["name"]) for c in got] == [(1, 968, "cup"), (2, 504, "coffee mug")]
    by_idx = {c["class_idx"]: c for c in coffee["topk"]}
    for c in got:  # the same probabilities and boxes as when they came as top-k
        assert c["prob"] == pytest.approx(by_idx[c["class_idx"]]["prob"], abs=1e-6)
        assert c["box"] == pytest.approx(by_idx[c["class_idx"]]["box"], abs=1e-6)


def test_topk_and_threshold_change_the_result(client: TestClient, coffee: dict) -> None:
    r = client.post("/api/explain", files={"file": ("c.jpg", COFFEE)}, data={"topk": "2", "threshold": "0.9"}).json()
    assert [c["class_idx"] for c in r["topk"]] == [c["class_idx"] for c in coffee["topk"][:2]]
    b9, b2 = r["topk"][0]["box"], coffee["topk"][0]["box"]
    assert (b9[2] - b9[0]) * (b9[3] - b9[1]) < (b2[2] - b2[0]) * (b2[3] - b2[1])  # a higher threshold: a smaller box
    assert b9[0] >= b2[0] and b9[1] >= b2[1] and b9[2] <= b2[2] and b9[3] <= b2[3]


def _replay_box(m: dict, threshold: float) -> list[float]:
    """What the page does with the JSON map: upsample to the network input, threshold, largest component,
    through the extent to original pixels."""
    import torch

    from camloc.cam import upsample_maps
    from camloc.localization import localize

    raw = torch.tensor(m["data"], dtype=torch.float32).reshape(m["shape"])[None, None]
    b = localize(upsample_maps(raw, tuple(m["network_size"])), threshold=threshold).boxes[0, 0].numpy()
    (x0, y0, x1, y1), (hh, ww) = m["extent"], m["network_size"]
    fx, fy = (x1 - x0) / ww, (y1 - y0) / hh
    out = [x0 + b[0] * fx, y0 + b[1] * fy, x0 + b[2] * fx, y0 + b[3] * fy]
    return [min(max(v, 0.0), lim) for v, lim in zip(out, [m["width"], m["height"]] * 2)]


def test_map_json_rethresholds_to_the_explain_box(client: TestClient, coffee: dict) -> None:
    for c in coffee["topk"][:3]:
        m = client.get(f"/api/map/{coffee['hash']}/{c['class_idx']}?format=json").json()
        assert m["class_idx"] == c["class_idx"] and m["name"] == c["name"]
        assert m["shape"] == [7, 7] and len(m["data"]) == 49 and (m["width"], m["height"]) == (600, 400)
        assert m["prob"] == pytest.approx(c["prob"], abs=1e-6)
        assert _replay_box(m, 0.2) == pytest.approx(c["box"], abs=0.02)


def test_map_of_any_class_without_a_new_forward(client: TestClient, engine: Engine, coffee: dict) -> None:
    r = client.post("/api/explain", files={"file": ("c.jpg", COFFEE)}, data={"classes": "0"}).json()
    m = client.get(f"/api/map/{coffee['hash']}/0").json()  # format defaults to json
    assert m["name"] == r["topk"][0]["name"] == "tench"
    assert m["prob"] == pytest.approx(r["topk"][0]["prob"], abs=1e-7)
    assert _replay_box(m, 0.2) == pytest.approx(r["topk"][0]["box"], abs=0.02)


def test_map_npy_and_png(client: TestClient, coffee: dict) -> None:
    from PIL import Image

    h, c = coffee["hash"], coffee["topk"][0]["class_idx"]
    js = client.get(f"/api/map/{h}/{c}?format=json").json()
    r = client.get(f"/api/map/{h}/{c}?format=npy")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    arr = np.load(io.BytesIO(r.content))
    assert arr.dtype == np.float32 and arr.shape == (7, 7)
    np.testing.assert_allclose(arr.ravel(), js["data"], atol=1e-5)
    r = client.get(f"/api/map/{h}/{c}?format=png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert img.shape == (224, 224) and img.dtype == np.uint8 and img.max() == 255  # normalised by the max


def test_page_and_static_files(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert 'src="/static/app.js"' in r.text and "http" not in r.text.replace('href="/docs"', "")  # no CDN
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        s = client.get(f"/static/{name}")
        assert s.status_code == 200 and kind in s.headers["content-type"]
        assert "https://" not in s.text and "http://" not in s.text
    schema = client.get("/openapi.json").json()
    assert {"/api/health", "/api/explain", "/api/map/{digest}/{class_idx}", "/api/classes"} <= set(schema["paths"])
    docs = client.get("/docs")  # Swagger UI from the package, not a CDN: works offline
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    assert "cdn" not in docs.text.lower() and 'src="/docs-static/swagger-ui-bundle.js"' in docs.text
    js = client.get("/docs-static/swagger-ui-bundle.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and len(js.content) > 100_000


# ------------------------------------------------------------------------------------------------ errors
def _post(client: TestClient, payload: bytes, name: str = "x.jpg", **data: str):
    return client.post("/api/explain", files={"file": (name, payload, "image/jpeg")}, data=data)


@pytest.mark.parametrize(
    ("payload", "data", "status", "text"),
    [
        (b"hello, not an image", {}, 415, "not an image file"),
        (COFFEE[:3000], {}, 422, "truncated"),
        (b"", {}, 422, "empty"),
        (_png_header_only(12_000, 12_000), {}, 400, "decompression bomb"),  # over camloc's max_pixels (2**27)
        (_png_header_only(30_000, 30_000), {}, 400, "MAX_IMAGE_PIXELS"),  # over PIL's own hard limit
        (COFFEE, {"method": "nope"}, 422, "`method` must be one of ['cam', "),
        (COFFEE, {"method": "affinity", "method_args": "beta=-1"}, 422, "`method_args`"),
        (COFFEE, {"method": "affinity", "method_args": "zeta=1"}, 422, "`method_args`"),
        (COFFEE, {"method": "affinity", "method_args": "beta"}, 422, "`method_args`"),
        (COFFEE, {"method": "flip", "method_args": "base=affinity(zeta=1)"}, 422, "`method_args`"),
        (COFFEE, {"method": "flip", "method_args": "base=affinity(iters=2"}, 422, "`method_args`"),
        (COFFEE, {"topk": "0"}, 422, "`topk`"),
        (COFFEE, {"topk": "many"}, 422, "`topk`"),
        (COFFEE, {"threshold": "1.5"}, 422, "`threshold`"),
        (COFFEE, {"model": "lite9"}, 422, "`model` must be one of the served models"),
        (COFFEE, {"classes": "cup,not-a-class"}, 422, "`classes`"),
        (COFFEE, {"classes": "1000"}, 422, "`classes`"),
        (COFFEE, {"method": "affinity", "method_args": "scale=nan"}, 422, "a finite number"),
        (COFFEE, {"method": "hires", "method_args": "scale=inf"}, 422, "a finite number"),
        (COFFEE, {"method": "hires", "method_args": "scale=1e9"}, 422, "in [0.05, 8.0]"),
        (COFFEE, {"method": "flip", "method_args": "scales=1,nan"}, 422, "`method_args`"),
        (COFFEE, {"method": "flip", "method_args": "base=affinity(scale=nan)"}, 422, "a finite number"),
        (COFFEE, {"method": "affinity", "method_args": "iters=1000000000"}, 422, "in [0, 64]"),
        (COFFEE, {"method": "dilate", "method_args": "stages=6"}, 422, "in [1, 4]"),
        (
            COFFEE,
            {"method": "multiscale", "method_args": "base=multiscale(scales=1;" * 50 + "base=cam" + ")" * 50},
            422,
            "nested at most 4 deep",
        ),
        (COFFEE, {"method": "ddt", "method_args": "fit=/etc"}, 422, "a path on the server"),
        (COFFEE, {"method": "flip", "method_args": "base=ddt(fit=../../tmp)"}, 422, "a path on the server"),
        (COFFEE, {"classes": "CARDIGAN"}, 422, "use the exact spelling or the index"),
    ],
)
def test_explain_errors(client: TestClient, payload: bytes, data: dict, status: int, text: str) -> None:
    r = _post(client, payload, **data)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert set(r.json()) == {"error"} and text in r.json()["error"]


def test_malformed_multipart_is_a_json_error(client: TestClient) -> None:
    # the form parser's own (Starlette) errors get the app's {"error": ...} body, like every other error
    r = client.post("/api/explain", content=b"x", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400 and set(r.json()) == {"error"} and "boundary" in r.json()["error"]


def test_class_names_exact_spelling_first() -> None:
    cats = ["Cardigan", "cup", "cardigan", "Dog"]
    assert parse_classes("Cardigan,cardigan", cats) == [0, 2]  # two classes that differ only in case
    assert parse_classes("CUP,dog", cats) == [1, 3]  # otherwise names match case-insensitively
    with pytest.raises(CamlocError, match=r"'Cardigan' \(0\), 'cardigan' \(2\)"):
        parse_classes("CARDIGAN", cats)
    with pytest.raises(CamlocError, match="`classes`"):
        parse_classes("\u0661", cats)  # a non-ASCII digit is not an index


def test_method_producers_are_bounded_per_model() -> None:
    from camloc.serve import engine as engine_module

    engine = Engine([ModelSource.parse("lite0")], cache_size=2)  # its own: the shared one's upload cache stays
    x = _png(64, 48, seed=3)
    for k in range(engine_module.MAX_PRODUCERS + 3):
        engine.explain(x, method="affinity", method_args=f"iters={k}", topk=1)
    loaded = next(iter(engine._models.values()))
    keys = list(loaded.producers)
    assert len(keys) == engine_module.MAX_PRODUCERS
    assert keys[-1][0] == "affinity" and ("iters", str(engine_module.MAX_PRODUCERS + 2)) in keys[-1][1]


def test_missing_file_is_422(client: TestClient) -> None:
    r = client.post("/api/explain", data={"topk": "3"})
    assert r.status_code == 422 and "`file`" in r.json()["error"]


def test_too_large_by_content_length_is_413(client: TestClient) -> None:
    r = _post(client, b"\xff" * (1 << 20 + 1))
    assert r.status_code == 413 and "more than 1 MB" in r.json()["error"]


def test_too_large_while_streaming_is_413(client: TestClient) -> None:
    # no Content-Length (a chunked body): the app stops reading as soon as the count passes the limit, before the
    # multipart parser sees the end; driven through raw ASGI so that the chunks pulled can be counted
    import asyncio
    import json

    pulled, sent = [], []
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
    chunks = [head] + [b"\xff" * 65536] * 64  # 4 MiB in 64 kiB chunks

    async def receive() -> dict:
        pulled.append(1)
        i = len(pulled) - 1
        return {"type": "http.request", "body": chunks[i], "more_body": i + 1 < len(chunks)}

    async def send(msg: dict) -> None:
        sent.append(msg)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/explain", "raw_path": b"/api/explain", "root_path": "", "query_string": b"",
        "headers": [(b"content-type", b"multipart/form-data; boundary=b"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {},
    }  # fmt: skip
    asyncio.run(client.app(scope, receive, send))
    assert sent[0]["status"] == 413
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert "too large" in json.loads(body)["error"]
    assert len(pulled) == 17  # the head + 16 chunks of 64 kiB pass 1 MiB; nothing more is read


@pytest.mark.parametrize(
    ("url", "status", "text"),
    [
        ("/api/map/{h}/1000", 422, "`class_idx` must be a class index in [0, 1000)"),
        ("/api/map/{h}/-1", 422, "`class_idx`"),
        ("/api/map/{h}/abc", 422, "`class_idx`"),
        ("/api/map/{h}/1?format=gif", 422, "`format`"),
        ("/api/map/{h}/1?model=lite9", 422, "`model`"),
        ("/api/map/0123abcd/1", 404, "`hash` must name a recent upload"),
        ("/api/classes?model=lite9", 422, "`model`"),
        ("/api/nothing-here", 404, "Not Found"),
    ],
)
def test_get_errors(client: TestClient, coffee: dict, url: str, status: int, text: str) -> None:
    r = client.get(url.format(h=coffee["hash"]))
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and text in r.json()["error"]


def test_wrong_method_is_405_json(client: TestClient) -> None:
    r = client.get("/api/explain")
    assert r.status_code == 405 and set(r.json()) == {"error"}


def test_server_keeps_serving_after_errors(client: TestClient, coffee: dict) -> None:
    for payload in (b"junk", COFFEE[:500], _png_header_only(12_000, 12_000), b"\0" * (2 << 20)):
        assert _post(client, payload).status_code in (400, 413, 415, 422)
    assert client.get("/api/health").json()["status"] == "ok"
    again = _post(client, COFFEE, name="coffee.jpg").json()
    assert [c["box"] for c in again["topk"]] == [c["box"] for c in coffee["topk"]]
    assert again["hash"] == coffee["hash"]  # same bytes, same content hash


# ------------------------------------------------------------------------------------------------ engine
def test_cache_is_lru_and_bounded(engine: Engine) -> None:
    small = Engine([ModelSource.parse("lite0")], cache_size=2)
    small._models = engine._models  # the already loaded lite0 (same source), not a second copy
    hashes = [small.explain(_png(40, 30, seed=i), overlay=False)["hash"] for i in range(3)]
    assert small.cached() == 2
    small.class_map(hashes[1], 5)  # hashes[1] becomes the most recent; hashes[2] the least
    small.explain(_png(40, 30, seed=9), overlay=False)
    assert small.cached() == 2
    from camloc.serve.engine import UnknownUploadError

    for gone in (hashes[0], hashes[2]):
        with pytest.raises(UnknownUploadError):
            small.class_map(gone, 5)
    assert small.class_map(hashes[1], 5).raw.shape == (7, 7)


def test_parse_classes() -> None:
    cats = ("tench", "Goldfish", "great white shark")
    assert parse_classes(None, cats) is None and parse_classes(" , ", cats) is None
    assert parse_classes("goldfish, 0,great white shark", cats) == [1, 0, 2]
    assert parse_classes([2, "TENCH"], cats) == [2, 0]
    with pytest.raises(CamlocError, match=r"^`classes` must be"):
        parse_classes("3", cats)


def test_engine_and_app_argument_errors(engine: Engine) -> None:
    with pytest.raises(CamlocError, match="`sources`"):
        Engine([])
    with pytest.raises(CamlocError, match="distinct names"):
        Engine([ModelSource.parse("lite0"), ModelSource.parse("lite0")])
    with pytest.raises(CamlocError, match="`workers`"):
        create_app(engine, workers=0)
    with pytest.raises(CamlocError, match="`method`"):
        create_app(engine, default_method="nope")
    assert ModelSource.from_checkpoint("runs/best.pt").name == "best"


def test_concurrent_requests_agree(client: TestClient, coffee: dict) -> None:
    from concurrent.futures import ThreadPoolExecutor

    t = time.perf_counter()
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(lambda _: _post(client, COFFEE).json(), range(4)))
    assert time.perf_counter() - t < 60
    for o in outs:
        assert [c["box"] for c in o["topk"]] == [c["box"] for c in coffee["topk"]]


# ------------------------------------------------------------------------------------------------ CLI
def test_help_lists_serve_without_importing_fastapi() -> None:
    code = (
        "import sys, io, contextlib\n"
        "from camloc.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    rc = main(['--help'])\n"
        "print(rc, 'fastapi' in sys.modules, 'uvicorn' in sys.modules, 'serve' in buf.getvalue())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False", "False", "True"]


def test_serve_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from camloc.cli import main

    assert main(["serve", "--method", "nope"]) == 2
    assert "`--method` must be one of ['cam', " in capsys.readouterr().err
    assert main(["serve", "--calibration", "no-such-calib.json"]) == 2
    assert "`calibration` must be a readable calib.json" in capsys.readouterr().err
    assert main(["serve", "--workers", "0"]) == 2
    assert main(["serve", "--model", "no-such-model", "--port", "1"]) == 2  # fails while loading, before listening
