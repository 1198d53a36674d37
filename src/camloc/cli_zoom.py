"""``--zoom`` / ``--zoom-margin`` for ``camloc explain``, ``evaluate`` and ``fit`` (torch-free; :mod:`camloc.zoom`)."""

from __future__ import annotations

import argparse


def add_zoom_args(p: argparse.ArgumentParser) -> None:
    """Add ``--zoom`` and ``--zoom-margin`` (``None``: the library default, :data:`camloc.zoom.DEFAULT_MARGIN`)."""
    p.add_argument(
        "--zoom",
        action="store_true",
        help="localize then classify: crop each image at the top-1 box of the method's map (--method; default "
        "the CAM) and combine the crop's logits with the whole image's (their mean)",
    )
    p.add_argument(
        "--zoom-margin",
        type=float,
        default=None,
        help="with --zoom: grow the box by this fraction of its width/height on each side (default 0.1)",
    )
