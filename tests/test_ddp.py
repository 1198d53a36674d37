"""torchrun / DistributedDataParallel on CPU (gloo): 2 processes end with identical weights; rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import camloc
from camloc.data.synthetic import make_synthetic_dataset

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from camloc.train import TrainConfig, train

    data, out = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])

    def dump(stats, model):
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, os.path.join(out, f"rank{rank}.pt"))

    cfg = TrainConfig(data=data, arch="tiny_gap", epochs=1, batch_size=4, lr=0.05, img_size=32, out_dir=out,
                      device="cpu", workers=0, seed=0)
    res = train(cfg, on_epoch=dump)
    with open(os.path.join(out, f"done{rank}.txt"), "w") as fh:
        fh.write(repr(res.history[0].val_top1))
    """
)


def test_two_cpu_processes_end_with_identical_weights(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_synthetic_dataset(data, num_classes=3, train_per_class=8, val_per_class=3, image_size=32, seed=2)
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    src = str(Path(camloc.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.run(
        [*cmd, str(script), str(data), str(out)], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    s0 = torch.load(out / "rank0.pt", weights_only=True)
    s1 = torch.load(out / "rank1.pt", weights_only=True)
    assert s0.keys() == s1.keys()
    for k in s0:
        assert torch.equal(s0[k], s1[k]), k  # parameters (all-reduced grads) and BN buffers (averaged)
    # rank 0 wrote the checkpoint, holding the same weights
    ck = torch.load(out / "last.pt", weights_only=True)
    assert all(torch.equal(ck["model"][k], s0[k]) for k in s0)
    assert ck["training"]["epoch"] == 1 and ck["training"]["world_size"] == 2
    # each rank ran ceil(24 / 2 / 4) = 3 steps
    assert ck["training"]["scheduler"]["last_epoch"] == 3
    # the all-reduced val top-1 covers all 9 val images once: it matches a single-process evaluation
    from camloc.train import load_checkpoint
    from camloc.training.data import ImageDataset, discover

    model, info = load_checkpoint(out / "last.pt")
    split = discover(data, val_fraction=0.1, seed=0)
    ds = ImageDataset(split.val, size=32, mean=info.preprocess.mean, std=info.preprocess.std, train=False)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([ds[i][1] for i in range(len(ds))])
    with torch.no_grad():
        top1 = int((model(x).argmax(1) == y).sum()) / len(y)
    assert ck["training"]["history"][0]["val_top1"] == top1
    assert (out / "done0.txt").read_text() == (out / "done1.txt").read_text()
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt", "rank0.pt", "rank1.pt"]
