"""``camloc serve``: the local web app and JSON API (uvicorn); localhost only unless ``--host`` says otherwise."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from camloc.errors import CamlocError


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="a model to serve, repeatable: lite0 | lite1 | lite2 | a registered name | timm:NAME | torchvision:NAME "
        "(default: lite0 unless --checkpoint is given); the first is the default",
    )
    p.add_argument("--checkpoint", type=Path, action="append", default=None,
                   help="a camloc training checkpoint to serve (repeatable; named by its file stem)")  # fmt: skip
    p.add_argument(
        "--method",
        default=None,
        help="the method the page selects first: any of `camloc methods` (default: the calibration's, else cam)",
    )
    p.add_argument("--calibration", type=Path, default=None,
                   help="a calib.json of `camloc calibrate`: its method's requests get boxes by its rule")  # fmt: skip
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MiB (default 20; 413 above)")
    p.add_argument("--workers", type=int, default=2, help="inference threads (default 2)")
    p.add_argument("--cache-size", type=int, default=64, help="recent uploads whose maps stay available (default 64)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from camloc.serve.engine import Engine, ModelSource, method_names

    calibration = None
    if args.calibration is not None:
        from camloc.calibrate import load_calibration

        calibration = load_calibration(args.calibration)
    if args.method is None:
        args.method = calibration.method if calibration is not None else "cam"
    if args.method not in method_names():
        raise CamlocError(f"`--method` must be one of {list(method_names())}; got {args.method!r}")
    if args.workers < 1 or args.cache_size < 1 or args.max_upload_mb <= 0 or not 0 < args.port < 65536:
        raise CamlocError("`--workers`, `--cache-size` and `--max-upload-mb` must be positive and `--port` in 1..65535")
    try:
        import uvicorn

        from camloc.serve.app import create_app
    except ImportError as e:
        raise CamlocError(f"`camloc serve` needs FastAPI and uvicorn: pip install camloc[serve] ({e})") from e
    sources = [ModelSource.parse(m) for m in args.model or ([] if args.checkpoint else ["lite0"])]
    sources += [ModelSource.from_checkpoint(c) for c in args.checkpoint or []]
    engine = Engine(sources, device=args.device, cache_size=args.cache_size, calibration=calibration)
    print(f"camloc: loading {', '.join(engine.model_names)} ...", file=sys.stderr)
    engine.load_all()  # a bad spec or checkpoint fails here, before the server listens
    app = create_app(engine, max_upload_mb=args.max_upload_mb, workers=args.workers, default_method=args.method)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"camloc: warning: listening on {args.host}: anyone who can reach it can use it", file=sys.stderr)
    print(f"camloc: serving on http://{args.host}:{args.port}/ (API docs: /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
