"""``camloc serve``: a local web app and JSON API for explaining photos (``pip install camloc[serve]``).

* :mod:`camloc.serve.engine` — models loaded once per name, one upload -> the ``results.jsonl`` object, a bounded
  LRU cache of recent uploads' features (by content hash) so the map of any class comes without a new forward.
  Needs no web framework.
* :mod:`camloc.serve.app` — :func:`~camloc.serve.app.create_app`, the FastAPI application (API + the page in
  ``static/``); imports fastapi, so it is imported only when serving.
* :mod:`camloc.serve.cli` — the ``camloc serve`` command.

Importing this package imports neither fastapi nor torch.
"""

from __future__ import annotations

__all__: list[str] = []
