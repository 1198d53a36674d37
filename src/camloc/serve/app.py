"""The FastAPI application of ``camloc serve``: the JSON API and the page (``static/``, no CDN, no build step).

Endpoints (errors are always JSON ``{"error": "..."}``; the server keeps serving after any of them):

* ``GET /`` the page; ``GET /static/...`` its script and style sheet.
* ``GET /api/health`` -> ``{"status": "ok", "models": [...], "default_model", "methods", "max_upload_mb",
  "version"}``.
* ``GET /api/classes?model=NAME`` -> ``{"model", "categories": [...]}`` (for the page's class search).
* ``POST /api/explain`` multipart: ``file`` (the photo), optional ``model``, ``topk`` (5), ``threshold`` (0.2),
  ``classes`` (comma-separated indices or names; replaces the top-k), ``method`` (``cam``; any name of
  ``camloc methods``, e.g. ``best``), ``method_args`` (``k=v;k=v``) -> the ``results.jsonl`` object of ``camloc
  explain`` (``path`` = the upload's file name) plus ``hash`` (sha256 of the bytes), ``model``, ``method``,
  ``method_args``, ``threshold``, ``box_rule`` and ``calibrated`` (the server's ``--calibration`` rule applies to
  requests for its method), ``network_size``, ``extent``, ``map_size``, ``map_url`` and ``overlay_png`` (a
  ``data:image/png;base64`` URL: the first class's map and box over the photo).
* ``GET /api/map/{hash}/{class_idx}?format=json|npy|png&model=NAME&method=NAME&method_args=...`` -> the raw map
  of any class of a recent upload (``cam``: from the cache, no new forward; other methods: run again on the
  cached input for that class): ``json`` (raw ``float32 [h, w]`` at feature resolution with
  ``network_size`` and ``extent`` to threshold it client-side, see :mod:`camloc.serve.engine`), ``npy`` (the raw
  array) or ``png`` (8-bit grey: the map upsampled to the network input, normalised by its max).

Statuses: 413 upload larger than ``max_upload_mb`` (checked while the body streams in, before it is parsed);
415 not an image; 422 an unreadable image or bad parameters; 400 a decompression bomb; 404 unknown upload hash
or route. Inference runs in a bounded thread pool (``workers``) so the event loop never blocks.

``/docs`` is Swagger UI over ``/openapi.json``, served from the ``swagger-ui-bundle`` package (part of the
``serve`` extra) under ``/docs-static``: like the main page, it needs no CDN and works offline.
"""

from __future__ import annotations

import asyncio
import functools
import io
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from camloc import __version__
from camloc._checks import check_number
from camloc.errors import CamlocError, ImageLoadError, ImageTooLargeError
from camloc.serve.engine import Engine, UnknownUploadError, method_names

try:
    from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise CamlocError("`camloc serve` needs FastAPI and uvicorn: pip install camloc[serve]") from e

__all__ = ["STATIC_DIR", "create_app"]

#: The page's files, shipped as package data.
STATIC_DIR = Path(__file__).parent / "static"

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"upload too large: more than {limit / 2**20:g} MB (the server's --max-upload-mb)")


class _UploadLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413, by ``Content-Length`` or while the
    body streams in (a chunked upload is cut off as soon as it passes the limit, before multipart parsing)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                await _send_json(send, 413, {"error": _TooLarge(self.limit).detail})
                return
        seen = 0

        async def counted() -> _Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)  # an HTTPException: FastAPI re-raises it from body parsing
            return msg

        await self.app(scope, counted, send)


async def _send_json(send: _Send, status: int, obj: dict[str, Any]) -> None:
    import json

    body = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _image_error_status(e: ImageLoadError) -> int:
    if isinstance(e, ImageTooLargeError):
        return 400
    if "not an image file" in str(e):
        return 415
    return 422


def _validation_message(e: RequestValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"`{loc}`: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def create_app(
    engine: Engine,
    *,
    max_upload_mb: float = 20.0,
    workers: int = 2,
    default_method: str = "cam",
) -> FastAPI:
    """The ASGI app serving ``engine``'s models (see the module docstring for the endpoints).

    Args:
        engine: the models and the upload cache.
        max_upload_mb: largest accepted request body in MiB (413 above it).
        workers: threads of the inference pool (requests beyond it wait in the pool's queue).
        default_method: the method the page selects first (one of :func:`~camloc.serve.engine.method_names`).
    """
    check_number("max_upload_mb", max_upload_mb, low=0.0)
    check_number("workers", workers, low=1, integer=True)
    if default_method not in method_names():
        from camloc._checks import fail

        fail("method", f"one of {list(method_names())}", default_method)
    limit = int(max_upload_mb * 2**20)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="camloc-serve")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="camloc",
        version=__version__,
        description="Class activation maps and boxes for photos (the JSON API of `camloc serve`).",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's default /docs loads Swagger UI from a CDN; ours is served locally (below)
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.pool = pool

    async def in_pool(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args, **kwargs))

    # ------------------------------------------------------------------------------------------ errors
    async def _http_error(_r: Request, e: Exception) -> JSONResponse:
        status = int(getattr(e, "status_code", 500))
        return JSONResponse({"error": str(getattr(e, "detail", e))}, status_code=status)

    from starlette.exceptions import HTTPException as StarletteHTTPException

    # FastAPI's HTTPException (and _TooLarge) subclass Starlette's, which the form parser raises: one handler for all
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for status in (404, 405):  # the router's own (Starlette) HTTPExceptions: unknown routes and methods
        app.add_exception_handler(status, _http_error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(e)}, status_code=422)

    @app.exception_handler(ImageLoadError)
    async def _bad_image(_r: Request, e: ImageLoadError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=_image_error_status(e))

    @app.exception_handler(UnknownUploadError)
    async def _unknown(_r: Request, e: UnknownUploadError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=404)

    @app.exception_handler(CamlocError)
    async def _camloc(_r: Request, e: CamlocError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=422)

    @app.exception_handler(Exception)
    async def _bug(_r: Request, e: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, status_code=500)

    # ------------------------------------------------------------------------------------------ page
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-static", StaticFiles(directory=str(swagger_ui_path)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Any:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="camloc API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js",
            swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon-32x32.png",
        )

    # ------------------------------------------------------------------------------------------ API
    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        """Liveness and what is served."""
        return {
            "status": "ok",
            "models": engine.model_names,
            "default_model": engine.default_model,
            "methods": list(method_names()),
            "default_method": default_method,
            "calibration": _calibration_info(engine.calibration),
            "max_upload_mb": max_upload_mb,
            "cached": engine.cached(),
            "version": __version__,
        }

    @app.get("/api/classes")
    async def classes(
        model: Annotated[str | None, Query(description="a served model (default: the first)")] = None,
    ) -> dict:
        """The class names of a model, index order."""
        name = engine.model_name(model)
        cats = await in_pool(engine.categories, name)
        return {"model": name, "categories": list(cats)}

    @app.post("/api/explain")
    async def explain(
        file: Annotated[UploadFile, File(description="the photo (any format PIL reads)")],
        model: Annotated[str | None, Form(description="a served model (default: the first)")] = None,
        topk: Annotated[int, Form(ge=1, description="how many top classes")] = 5,
        threshold: Annotated[float, Form(ge=0.0, le=1.0, description="box threshold, fraction of the map's max")] = 0.2,
        classes: Annotated[
            str | None, Form(description="comma-separated class indices or names (replaces top-k)")
        ] = None,
        method: Annotated[str, Form(description="a map method of `camloc methods` (cam, best, affinity, ...)")] = "cam",
        method_args: Annotated[str | None, Form(description="the method's parameters, 'k=v;k=v'")] = None,
    ) -> dict[str, Any]:
        """Explain one photo: top-k classes (or ``classes``) with boxes in original pixels and an overlay."""
        data = await file.read()  # the engine checks `method` and `method_args` (422 naming them)
        result = await in_pool(
            engine.explain,
            data,
            filename=file.filename or "upload",
            model=model,
            topk=topk,
            threshold=threshold,
            classes=classes,
            method=method,
            method_args=method_args,
        )
        from urllib.parse import urlencode

        query = {"model": result["model"]}
        if method != "cam" or method_args:
            query["method"] = method
            if method_args:
                query["method_args"] = method_args
        result["map_url"] = f"/api/map/{result['hash']}/{{class_idx}}?" + urlencode(query)
        return result

    @app.get("/api/map/{digest}/{class_idx}")
    async def class_map(
        digest: str,
        class_idx: int,
        format: Annotated[
            Literal["json", "npy", "png"], Query(description="raw map as JSON, .npy or grey PNG")
        ] = "json",
        model: Annotated[str | None, Query(description="a served model (default: the first)")] = None,
        method: Annotated[str, Query(description="the method the upload was explained with")] = "cam",
        method_args: Annotated[str | None, Query(description="its parameters, 'k=v;k=v'")] = None,
    ) -> Response:
        """The raw map of any class of a recent upload (``digest`` = the ``hash`` from ``/api/explain``)."""
        cm = await in_pool(engine.class_map, digest, class_idx, model=model, method=method, method_args=method_args)
        if format == "json":
            return JSONResponse(cm.to_dict())
        if format == "npy":
            import numpy as np

            buf = io.BytesIO()
            np.save(buf, cm.raw)
            return Response(buf.getvalue(), media_type="application/octet-stream",
                            headers={"content-disposition": f'attachment; filename="map_{class_idx}.npy"'})  # fmt: skip
        png = await in_pool(_grey_png, cm)
        return Response(png, media_type="image/png")

    return _wrap(app, limit)


def _calibration_info(cal: Any) -> dict[str, Any] | None:
    if cal is None:
        return None
    return {"method": cal.method, "method_args": cal.method_args, "box_rule": cal.rule.describe()}


def _wrap(app: FastAPI, limit: int) -> FastAPI:
    app.add_middleware(_UploadLimit, limit=limit)  # type: ignore[arg-type]
    return app


def _grey_png(cm: Any) -> bytes:
    import numpy as np
    from PIL import Image

    u8 = np.rint(cm.normalized() * 255.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="PNG")
    return buf.getvalue()
