"""``python -m camloc.train`` (the torchrun entry point) and the names of :mod:`camloc.training`, importable here.

The trainer lives in the :mod:`camloc.training` package; this module keeps ``from camloc.train import ...`` and
``torchrun -m camloc.train`` working.
"""

from __future__ import annotations

import sys

from camloc.training import (
    EpochStats,
    TrainConfig,
    TrainResult,
    add_train_arguments,
    config_from_args,
    load_checkpoint,
    main,
    register_cli,
    run_train,
    train,
)

__all__ = [
    "EpochStats",
    "TrainConfig",
    "TrainResult",
    "add_train_arguments",
    "config_from_args",
    "load_checkpoint",
    "main",
    "register_cli",
    "run_train",
    "train",
]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
