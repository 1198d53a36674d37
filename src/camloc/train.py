"""``python -m camloc.train`` (the torchrun entry point) and the names of :mod:`camloc.training`, importable here.

The trainer lives in the :mod:`camloc.training` package; this module keeps ``from camloc.train import ...`` and
``torchrun -m camloc.train`` working.
"""

from __future__ import annotations

import sys

from camloc import training
from camloc.training import *  # noqa: F403 - the package's public names, listed once in its __all__
from camloc.training import main

__all__ = list(training.__all__)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
