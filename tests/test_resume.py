"""Resumable runs: a real ``camloc explain`` / ``camloc evaluate`` killed mid-way (SIGTERM, SIGKILL) and continued
with ``--resume`` ends with exactly the files of an uninterrupted run; journals, option checks and signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import camloc
from camloc.cli import main
from camloc.errors import CamlocValueError
from camloc.resume import STATE_FILE, Journal, RunInterrupted, graceful_signals, run_options

SRC = str(Path(camloc.__file__).resolve().parent.parent)


def _folder(root: Path, n: int, size: int = 64) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / f"im{i:03d}.png")
    (root / "broken.png").write_bytes(b"not a png")  # a failure in the middle of the sorted list
    return root


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "camloc.cli", *argv]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _kill_after(argv: list[str], watch: Path, n_lines: int, sig: int, timeout: float = 240) -> int:
    """Start ``argv``, send ``sig`` once ``watch`` holds ``n_lines`` lines; return the exit status."""
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while _lines(watch) < n_lines:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before it could be interrupted: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run wrote no lines in time")
        time.sleep(0.002)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.stderr is not None
    proc.stderr.close()
    return proc.returncode


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _folder(tmp_path_factory.mktemp("resume") / "images", 80)


@pytest.fixture(scope="module")
def reference(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run, in a process like the interrupted one (float results depend on the thread count)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    r = _run(_cli("explain", str(folder), "--out", str(out), "--batch-size", "1", "--quiet", "--no-images"))
    assert r.returncode == 1, r.stderr  # 1: broken.png failed, the rest explained
    return out


def _manifest(out: Path) -> dict:
    doc = json.loads((out / "manifest.json").read_text())
    doc.pop("seconds")
    return doc


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL])  # SIGTERM: the overlays test below
def test_explain_killed_then_resumed_equals_an_uninterrupted_run(folder, reference, tmp_path, sig) -> None:
    out = tmp_path / "out"
    argv = _cli("explain", str(folder), "--out", str(out), "--batch-size", "1", "--quiet", "--no-images")
    rc = _kill_after(argv, out / "results.jsonl.partial", 8, sig)
    if sig == signal.SIGTERM:
        assert rc == 128 + signal.SIGTERM  # graceful: synced what was finished, then exited
    else:
        assert rc == -signal.SIGKILL
    assert not (out / "results.jsonl").exists() and (out / STATE_FILE).is_file()
    done = _lines(out / "results.jsonl.partial")
    assert 8 <= done < 80
    if sig == signal.SIGKILL:  # a line torn by the kill: repaired (dropped) on resume
        with open(out / "results.jsonl.partial", "ab") as fh:
            fh.write(b'{"path": "/half/a/line", "wid')
    r = _run([*argv, "--resume"])
    assert r.returncode == 1, r.stderr
    got = (out / "results.jsonl").read_bytes()
    assert got == (reference / "results.jsonl").read_bytes()  # same rows, same order, none lost or duplicated
    rows = [json.loads(x) for x in got.splitlines()]
    assert len(rows) == len({r["path"] for r in rows}) == 80
    assert _manifest(out) == _manifest(reference)  # incl. the one failure, listed once
    assert not (out / STATE_FILE).exists() and not (out / "results.jsonl.partial").exists()
    again = _run([*argv, "--resume"])  # a finished run: nothing to do, nothing rewritten
    assert again.returncode == 0 and "complete" in again.stderr
    assert (out / "results.jsonl").read_bytes() == got


@pytest.mark.slow
def test_explain_resume_with_overlays_draws_every_image_once(tmp_path) -> None:
    folder = _folder(tmp_path / "images", 40)
    out = tmp_path / "out"
    argv = _cli("explain", str(folder), "--out", str(out), "--batch-size", "1", "--quiet", "--max-side", "64")
    assert _kill_after(argv, out / "results.jsonl.partial", 5, signal.SIGTERM) == 128 + signal.SIGTERM
    assert _run([*argv, "--resume"]).returncode == 1
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["overlay"] for r in rows] == [f"overlays/im{i:03d}.png" for i in range(40)]
    assert all((out / r["overlay"]).is_file() and (out / r["panel"]).is_file() for r in rows)
    assert len(list((out / "overlays").glob("*.png"))) == 40


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "syn"
    assert main(["synthetic", str(root), "--classes", "4", "--train-per-class", "1", "--val-per-class", "12"]) == 0
    return root / "val" / "labels.csv"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL])  # the hard case: no chance to clean up
def test_evaluate_killed_then_resumed_gives_the_same_metrics(annotated, tmp_path, sig) -> None:
    common = ("--batch-size", "2", "--workers", "0", "--quiet")
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert _run(_cli("evaluate", str(annotated), "--out", str(ref), *common)).returncode == 0
    argv = _cli("evaluate", str(annotated), "--out", str(out), *common)
    rc = _kill_after(argv, out / ".per_image.jsonl.partial", 10, sig)
    assert rc == (128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL)
    assert not (out / "metrics.json").exists() and (out / ".camloc_eval_state.pkl").is_file()
    assert 10 <= _lines(out / ".per_image.jsonl.partial") < 48
    r = _run([*argv, "--resume"])
    assert r.returncode == 0, r.stderr
    a, b = json.loads((ref / "metrics.json").read_text()), json.loads((out / "metrics.json").read_text())
    a.pop("seconds"), b.pop("seconds")
    assert b == a  # every metric, curve and count exactly
    assert a["metrics"]["pxap"] > 0 and a["metrics"]["maxboxacc"] > 0
    assert (out / "per_image.jsonl").read_bytes() == (ref / "per_image.jsonl").read_bytes()
    assert not (out / ".camloc_eval_state.pkl").exists()


# ----------------------------------------------------------------------------------------------------------
# in-process


def _explain(folder: Path, out: Path, *extra: str) -> int:
    return main(["explain", str(folder), "--out", str(out), "--quiet", "--no-images", "--topk", "2", *extra])


def test_resume_refuses_other_options_and_other_inputs(tmp_path, capsys) -> None:
    folder = _folder(tmp_path / "images", 3)
    out = tmp_path / "out"
    assert _explain(folder, out) == 1
    capsys.readouterr()
    assert _explain(folder, out, "--resume", "--batch-size", "3") == 0  # speed options may change
    assert "complete" in capsys.readouterr().err
    assert _explain(folder, out, "--resume", "--threshold", "0.5") == 2
    err = capsys.readouterr().err
    assert "`--resume` must repeat the options" in err and "threshold: 0.2 -> 0.5" in err
    (folder / "extra.png").write_bytes((folder / "im000.png").read_bytes())
    assert _explain(folder, out, "--resume") == 2
    assert "inputs" in capsys.readouterr().err
    assert _explain(folder, out) == 1  # without --resume: a fresh run over the new inputs
    assert len((out / "results.jsonl").read_text().splitlines()) == 4


def test_resume_of_nothing_starts_a_fresh_run(tmp_path) -> None:
    folder = _folder(tmp_path / "images", 2)
    assert _explain(folder, tmp_path / "out", "--resume") == 1
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 2


def test_journal_truncates_to_the_synced_prefix(tmp_path) -> None:
    j = Journal(tmp_path / "j.jsonl")
    assert j.open() == []
    j.write({"a": 1})
    j.write({"a": 2})
    assert j.sync() == (len(b'{"a": 1}\n{"a": 2}\n'), 2)
    j.write({"a": 3})  # written, never synced: dropped on resume
    j.close()
    with open(tmp_path / "j.jsonl", "ab") as fh:
        fh.write(b'{"a": 4')  # a torn last line
    size, lines = len(b'{"a": 1}\n{"a": 2}\n'), 2
    k = Journal(tmp_path / "j.jsonl")
    assert k.open(size=size, lines=lines) == [{"a": 1}, {"a": 2}]
    k.write({"a": 5})
    k.sync()
    k.close()
    assert (tmp_path / "j.jsonl").read_text().splitlines() == ['{"a": 1}', '{"a": 2}', '{"a": 5}']
    with pytest.raises(CamlocValueError, match="bytes recorded at the last sync"):
        Journal(tmp_path / "j.jsonl").open(size=10_000, lines=3)


def test_sigterm_raises_run_interrupted_after_a_critical_section() -> None:
    from camloc import resume

    with graceful_signals():
        with pytest.raises(RunInterrupted) as e, resume._critical():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler ran and deferred the signal: we are still here
            reached = True
        assert reached and e.value.signum == signal.SIGTERM
        assert resume.interrupted_exit_code(e.value) == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_run_options_keep_result_options_only() -> None:
    import argparse

    ns = argparse.Namespace(model="lite0", weights=Path("w.pt"), topk=5, batch_size=8, device="cpu", quiet=True,
                            out=Path("o"), resume=True, func=print, threshold=0.2)  # fmt: skip
    assert run_options(ns) == {"model": "lite0", "threshold": 0.2, "topk": 5, "weights": "w.pt"}
