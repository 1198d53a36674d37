"""`camloc serve` in a real browser (Playwright driving Debian's chromium), and a small load test on loopback.

The browser test uploads the bundled photos, checks the page's top-1 label against `camloc explain`'s
(`explain_images`, the library behind it), checks the box the page computes from the raw map against the server's,
moves the threshold slider and sees the box shrink. ``CAMLOC_UPDATE_SCREENSHOT=1`` also writes docs/serve.png
(the README's screenshot), regenerated on purpose like a golden file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

import camloc  # noqa: E402
from camloc.serve.app import create_app  # noqa: E402
from camloc.serve.engine import Engine, ModelSource  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ASSETS = Path(camloc.__file__).parent / "assets"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def engine() -> Engine:
    e = Engine([ModelSource.parse("lite0")])
    e.load_all()
    return e


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[str]:
    """uvicorn in a thread on a free loopback port; yields the base URL."""
    port = _free_port()
    config = uvicorn.Config(create_app(engine, max_upload_mb=2, workers=2), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on")  # fmt: skip
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def _box(page) -> list[float]:
    return json.loads(page.locator("#box-text").get_attribute("data-box"))


def test_page_in_chromium(server: str, engine: Engine, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian package `chromium`; `make` installs it on CI)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from camloc.explain import explain_images

    model, info = engine.get_model("lite0")
    [ref] = list(explain_images([ASSETS / "coffee.jpg"], model, info, topk=5))
    top1 = ref.result.topk[0]

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/")
            page.wait_for_function("document.getElementById('model').options.length > 0")
            page.set_input_files("#file", [str(ASSETS / "coffee.jpg"), str(ASSETS / "cat.jpg")])
            page.wait_for_function("document.querySelectorAll('#gallery figure').length === 2")
            page.wait_for_function("document.getElementById('box-text').dataset.box !== ''", timeout=60_000)
            assert page.locator("#topk li .name").first.inner_text() == top1.name == "espresso"
            assert page.locator("#selected-label").inner_text().startswith("espresso")
            box02 = _box(page)
            assert box02 == pytest.approx(list(top1.box), abs=0.5)  # the page's rule = the server's rule
            page.wait_for_function(
                "!Array.from(document.querySelectorAll('#gallery figcaption')).some(c => c.textContent === "
                "'explaining...')",
                timeout=60_000,
            )
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot), full_page=True)

            page.locator("#threshold").fill("0.7")
            page.wait_for_function(f"document.getElementById('box-text').dataset.box !== '{json.dumps(box02)}'")
            box07 = _box(page)
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
            assert 0 < area(box07) < area(box02)
            assert box07[0] >= box02[0] and box07[1] >= box02[1] and box07[2] <= box02[2] and box07[3] <= box02[3]

            page.locator("#topk li").nth(1).click()  # switch class: the label follows
            page.wait_for_function("document.getElementById('selected-label').textContent.startsWith('cup')")
            page.fill("#search", "tench")
            page.locator("#matches li").first.click()
            page.wait_for_function("document.getElementById('selected-label').textContent.startsWith('tench')")
            assert errors == []
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("CAMLOC_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS / "serve.png")


@pytest.mark.slow
def test_load_on_loopback(server: str) -> None:
    """50 uploads, 8 at a time, a burst of 10 malformed uploads in the middle: no 5xx, good answers unchanged."""
    import httpx

    photos = [(ASSETS / n).read_bytes() for n in ("coffee.jpg", "cat.jpg")]
    bad = [b"not an image", photos[0][:4000]]
    with httpx.Client(base_url=server, timeout=120) as c:
        want = [c.post("/api/explain", files={"file": ("p.jpg", ph)}).json()["topk"] for ph in photos]

    lat: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        malformed = 20 <= i < 30  # the burst
        data = bad[i % 2] if malformed else photos[i % 2]
        t = time.perf_counter()
        with httpx.Client(base_url=server, timeout=120) as c:
            r = c.post("/api/explain", files={"file": (f"p{i}.jpg", data)})
        dt = time.perf_counter() - t
        with lock:
            statuses.append(r.status_code)
            if not malformed:
                lat.append(dt)
                assert r.status_code == 200 and r.json()["topk"] == want[i % 2]
            else:
                assert r.status_code in (415, 422)

    from concurrent.futures import ThreadPoolExecutor

    n = 50
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(one, range(n)))
    wall = time.perf_counter() - t0
    assert len(statuses) == n and all(s < 500 for s in statuses)
    lat.sort()
    p50 = statistics.median(lat)
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    print(f"\nserve load: {n} requests (8 concurrent, {n - len(lat)} malformed): p50 {p50 * 1e3:.0f} ms, "
          f"p95 {p95 * 1e3:.0f} ms, {n / wall:.1f} req/s")  # fmt: skip
