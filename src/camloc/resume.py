"""Resumable, interruptible long runs: durable JSONL journals, run state, option checks, graceful signals.

A long ``camloc explain`` or ``camloc evaluate`` can be killed at any moment (SIGTERM, SIGINT, SIGKILL, a lost
machine) and continued with ``--resume`` without redoing finished images and without losing or duplicating
output lines. The mechanism is one rule: **the run-state file is the commit point**.

- Output lines are appended to journal files (``results.jsonl.partial``, ...) and, at each sync, flushed and
  fsynced; then the run state (``.camloc_run.json``: the run's options, each journal's committed size in bytes
  and line count, and, for ``evaluate``, the streaming accumulators) is replaced atomically
  (:mod:`camloc._io`).
- On resume every journal is truncated back to its committed size (which also repairs a partially written last
  line), and the images whose lines are in it are skipped. Lines written after the last sync are dropped with the
  truncation and redone, so nothing is lost and nothing is duplicated.
- The state records the options that decide the results (model, weights, top-k, threshold, the list of inputs,
  ...); a resume with other options is refused with a camloc error naming them. Options that only change speed
  (``--batch-size``, ``--device``, ``--workers``, ``--engine``, ``--actors``) may change between the runs.
- When a run completes, the journals are renamed onto the final names (``results.jsonl``) and the state file
  is removed; the manifest (``manifest.json`` / ``metrics.json``) carries the options, so resuming a finished
  run does nothing.

:func:`graceful_signals` turns SIGTERM into :class:`RunInterrupted` (SIGINT already raises
:class:`KeyboardInterrupt`) and defers both while a sync is being written, so files are consistent whatever the
moment of the signal; the commands then sync what is finished and exit with ``128 + signal``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from camloc._io import atomic_write_bytes, atomic_write_json, publish_file
from camloc.errors import CamlocValueError

__all__ = [
    "STATE_FILE",
    "EvalCheckpoint",
    "Journal",
    "ResultJournal",
    "RunInterrupted",
    "graceful_signals",
    "inputs_digest",
    "run_options",
]

#: The run-state file inside a run's output folder (the commit point of its journals).
STATE_FILE = ".camloc_run.json"
EVAL_STATE_FILE = ".camloc_eval_state.pkl"
PARTIAL_SUFFIX = ".partial"

#: CLI options that change only how fast a run goes, never its results: they may differ on resume.
SPEED_OPTIONS = frozenset(
    {
        "func", "debug", "resume", "quiet", "json", "device", "batch_size", "workers", "engine", "address",
        "actors", "gpus_per_actor", "cpus_per_actor", "out", "paths", "command",
    }
)  # fmt: skip


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal (``signum``); what was finished is synced and ``--resume`` continues it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


# ----------------------------------------------------------------------------------------------------------
# signals


class _Signals:
    """SIGTERM -> :class:`RunInterrupted`; SIGINT/SIGTERM deferred inside :meth:`critical` sections."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending: int | None = None

    def handler(self, signum: int, frame: Any) -> None:
        if self.depth:
            self.pending = signum
            return
        raise RunInterrupted(signum)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending is not None:
                signum, self.pending = self.pending, None
                raise RunInterrupted(signum)


_SIGNALS: _Signals | None = None


@contextlib.contextmanager
def graceful_signals() -> Iterator[None]:
    """Within the block SIGTERM and SIGINT raise :class:`RunInterrupted` in the main thread, except while a
    journal sync is being written (then right after it). Outside the main thread: does nothing."""
    global _SIGNALS
    if threading.current_thread() is not threading.main_thread() or _SIGNALS is not None:
        yield
        return
    sigs = _Signals()
    old = {s: signal.signal(s, sigs.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    _SIGNALS = sigs
    try:
        yield
    finally:
        _SIGNALS = None
        for s, h in old.items():
            signal.signal(s, h)


def _critical() -> contextlib.AbstractContextManager[None]:
    return _SIGNALS.critical() if _SIGNALS is not None else contextlib.nullcontext()


def critical() -> contextlib.AbstractContextManager[None]:
    """A section that SIGINT / SIGTERM do not interrupt (inside :func:`graceful_signals`; deferred to its end)."""
    return _critical()


def interrupted_exit_code(exc: BaseException) -> int:
    """``128 + signal`` for an interrupt (SIGINT for a plain :class:`KeyboardInterrupt`)."""
    return 128 + (exc.signum if isinstance(exc, RunInterrupted) else int(signal.SIGINT))


def interrupted(exc: BaseException, close: Callable[[], None], out: os.PathLike[str] | str) -> int:
    """An interrupted command's ending: ``close()`` its run files, say on stderr how to continue, and return
    :func:`interrupted_exit_code`."""
    close()
    print(f"camloc: interrupted; continue with the same command and --resume ({out})", file=sys.stderr)
    return interrupted_exit_code(exc)


# ----------------------------------------------------------------------------------------------------------
# options


def _plain(v: Any) -> Any:
    if isinstance(v, os.PathLike):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return repr(v)


def run_options(args: Any, *, exclude: Iterable[str] = (), **extra: Any) -> dict[str, Any]:
    """The options of a CLI run that decide its results: every ``argparse`` option except :data:`SPEED_OPTIONS`
    and ``exclude``, plus ``extra``, as plain JSON values (paths as strings), sorted by name."""
    skip = SPEED_OPTIONS | set(exclude)
    opts = {k: _plain(v) for k, v in vars(args).items() if k not in skip and not callable(v)}
    opts.update({k: _plain(v) for k, v in extra.items()})
    return dict(sorted(opts.items()))


def inputs_digest(keys: Iterable[str]) -> dict[str, Any]:
    """``{"count", "sha256"}`` of a run's input list (in order): a resume must see the same inputs."""
    h = hashlib.sha256()
    n = 0
    for k in keys:
        h.update(k.encode("utf-8", "surrogateescape") + b"\n")
        n += 1
    return {"count": n, "sha256": h.hexdigest()}


def check_same_options(recorded: dict[str, Any], options: dict[str, Any], where: Path) -> None:
    """Raise a camloc error naming the options that differ between the recorded run and this one."""
    if recorded == options:
        return
    keys = sorted(set(recorded) | set(options))
    diff = [f"{k}: {recorded.get(k)!r} -> {options.get(k)!r}" for k in keys if recorded.get(k) != options.get(k)]
    raise CamlocValueError(
        f"`--resume` must repeat the options of the run in {where}; these differ: {'; '.join(diff)} "
        "(drop --resume to start over, or use another --out)"
    )


# ----------------------------------------------------------------------------------------------------------
# journals


class Journal:
    """Append-only JSONL file whose committed prefix (``size`` bytes, ``lines`` lines) survives any kill.

    :meth:`write` appends a line (buffered); :meth:`sync` flushes and fsyncs and returns the new committed
    ``(size, lines)``, which the caller records in its run state. :meth:`open` with a recorded ``(size, lines)``
    truncates the file back to it (dropping lines written after that sync and any partial last line).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self.lines = 0
        self.pending = 0  # lines written since the last sync
        self._fh: IO[bytes] | None = None

    def open(self, *, size: int = 0, lines: int = 0) -> list[dict[str, Any]]:
        """Open for appending after the committed prefix; return that prefix's records (empty when fresh)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        records: list[dict[str, Any]] = []
        if size:
            have = self.path.stat().st_size if self.path.is_file() else -1
            if have < size:
                raise CamlocValueError(
                    f"`--resume` needs {self.path} to hold the {size} bytes recorded at the last sync; "
                    f"it has {max(have, 0)} (the run's files were changed; start over without --resume)"
                )
            with open(self.path, "r+b") as fh:
                fh.truncate(size)
                data = fh.read(size)
            records = [json.loads(x) for x in data.decode("utf-8").splitlines()]
            if len(records) != lines:
                raise CamlocValueError(
                    f"`--resume` needs {lines} lines in the first {size} bytes of {self.path}; found {len(records)}"
                )
        self._fh = open(self.path, "ab" if size else "wb")  # noqa: SIM115 - held until close()
        self._fh.seek(0, os.SEEK_END)
        self.size, self.lines, self.pending = size, lines, 0
        return records

    def write(self, obj: Any) -> None:
        assert self._fh is not None
        self._fh.write((json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))
        self.pending += 1

    def sync(self) -> tuple[int, int]:
        """Flush + fsync; return the committed ``(size, lines)``."""
        assert self._fh is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.size = self._fh.tell()
        self.lines += self.pending
        self.pending = 0
        return self.size, self.lines

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None

    def __del__(self) -> None:
        self.close()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CamlocValueError(f"`--resume` needs a readable run state in {path}; {e}") from e
    return doc if isinstance(doc, dict) else None


class ResultJournal:
    """The resumable ``results.jsonl`` (+ failures) of a ``camloc explain`` run in ``out_dir``.

    Rows are :class:`camloc.explain.ImageResult` dicts (``"path"`` is the input's key); failures are
    ``{"path", "error"}``. ``keys`` are every input's key in input order. Construction checks the options of a
    resumed run and touches no file; :attr:`complete` says ``resume`` found this exact run finished (nothing to
    do). After :meth:`open`:

    - :attr:`done`: keys already finished (rows or failures), to be skipped;
    - :attr:`rows` / :attr:`failures`: the finished records (resumed ones first).

    :meth:`write` / :meth:`fail` record new outcomes; every ``sync_every`` of them the journal is synced. :meth:`sync`
    forces it; :meth:`commit` syncs, renames the journal onto ``results.jsonl`` and returns the failures in input
    order; :meth:`finish` (after the caller wrote the manifest) removes the run state.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        command: str,
        options: dict[str, Any],
        keys: Sequence[str],
        resume: bool,
        sync_every: int = 16,
        name: str = "results.jsonl",
        manifest: str = "manifest.json",
        keep_rows: bool = True,
    ) -> None:
        self.out = Path(out_dir)
        self.command = command
        self.options = {**options, "inputs": inputs_digest(keys)}
        self.order = {k: i for i, k in enumerate(keys)}
        self.final = self.out / name
        self.manifest = self.out / manifest
        self.state_path = self.out / STATE_FILE
        self.sync_every = max(1, int(sync_every))
        self.results = Journal(self.out / (name + PARTIAL_SUFFIX))
        self.fails = Journal(self.out / (".failures.jsonl" + PARTIAL_SUFFIX))
        self.complete = False
        self.rows: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.keep_rows = keep_rows
        self._unsynced = 0
        self.done: set[str] = set()
        state = _read_json(self.state_path) if resume else None
        if resume and state is None:
            done = _read_json(self.manifest) if self.final.is_file() else None
            if done is not None and done.get("command") == command and "options" in done:
                check_same_options(done["options"], self.options, self.out)
                self.complete = True
        if state is not None:
            if state.get("command") != command:
                raise CamlocValueError(
                    f"`--resume` must continue a `{command}` run; {self.state_path} is a {state.get('command')!r} run"
                )
            check_same_options(state.get("options", {}), self.options, self.out)
        self._state = state

    def open(self) -> None:
        """Create the journals, or truncate the resumed ones to their last sync and read them (:attr:`done`)."""
        state = self._state
        if state is not None:
            j = state["journals"]
            if not self.results.path.is_file() and self.final.is_file():  # killed between rename and cleanup
                publish_file(self.final, self.results.path)
            self.rows = self.results.open(size=j["results"][0], lines=j["results"][1])
            self.failures = self.fails.open(size=j["failures"][0], lines=j["failures"][1])
        else:
            with _critical():
                self._write_state()  # the commit point exists before the journals do
                self.rows = self.results.open()
                self.failures = self.fails.open()
        self.done = {r["path"] for r in self.rows} | {f["path"] for f in self.failures}
        if not self.keep_rows:
            self.rows = []

    @property
    def n_rows(self) -> int:
        return self.results.lines + self.results.pending

    def _write_state(self) -> None:
        atomic_write_json(
            self.state_path,
            {
                "command": self.command,
                "options": self.options,
                "journals": {
                    "results": [self.results.size, self.results.lines],
                    "failures": [self.fails.size, self.fails.lines],
                },
            },
        )

    def write(self, row: dict[str, Any]) -> None:
        with _critical():
            self.results.write(row)
        if self.keep_rows:
            self.rows.append(row)
        self._tick()

    def fail(self, failure: dict[str, Any]) -> None:
        with _critical():
            self.fails.write(failure)
        self.failures.append(failure)
        self._tick()

    def _tick(self) -> None:
        self._unsynced += 1
        if self._unsynced >= self.sync_every:
            self.sync()

    def sync(self) -> None:
        """Make every outcome recorded so far durable (journals fsynced, then the state replaced)."""
        with _critical():
            self.results.sync()
            self.fails.sync()
            self._write_state()
        self._unsynced = 0

    def commit(self) -> list[dict[str, Any]]:
        """Sync, publish ``results.jsonl`` and return every failure in input order."""
        self.sync()
        with _critical():
            self.results.close()
            self.fails.close()
            publish_file(self.results.path, self.final)
        big = len(self.order)
        return sorted(self.failures, key=lambda f: self.order.get(f["path"], big))

    def finish(self) -> None:
        """Remove the run state and the failure journal (call after writing the manifest with the options)."""
        with _critical():
            for p in (self.state_path, self.fails.path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)

    def close(self) -> None:
        """Close the journals without publishing (an interrupted or failed run; ``--resume`` continues it)."""
        self.results.close()
        self.fails.close()

    def discard_if_unused(self) -> bool:
        """Close; and when this was a fresh run that recorded nothing (it failed at its first batch, e.g. on a bad
        option), remove its run files and ``out_dir`` if left empty, so no half-made run is left. ``True`` if so."""
        self.close()
        if self._state is not None or self.results.lines + self.results.pending or self.failures:
            return False
        _remove_run(self.out, (self.state_path, self.results.path, self.fails.path))
        return True


# ----------------------------------------------------------------------------------------------------------
# evaluate


class EvalCheckpoint:
    """Checkpoints of a streaming evaluation in ``out_dir``: accumulators + failures + the number of samples done
    (a prefix of the sample list: batches are consumed in order), with the per-image records in a journal.

    :func:`camloc.evaluate.evaluate_samples` calls :meth:`restore` once (fills its fresh accumulator state and
    returns how many samples are done) and :meth:`save` after batches (every ``every`` batches). The metrics of a
    resumed run equal those of an uninterrupted one: the accumulators only hold integer counts and histograms,
    which the remaining images add to exactly as they would have.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        options: dict[str, Any],
        keys: Sequence[str],
        resume: bool,
        every: int = 1,
    ) -> None:
        self.out = Path(out_dir)
        self.options = {**options, "inputs": inputs_digest(keys)}
        self.path = self.out / EVAL_STATE_FILE
        self.journal = Journal(self.out / (".per_image.jsonl" + PARTIAL_SUFFIX))
        self.every = max(1, int(every))
        self.resume = resume
        self._batches = 0
        self._written = 0
        self._fresh = True

    def restore(self, state: Any, failures: list[dict[str, str]]) -> int:
        """Fill ``state`` (the evaluation's accumulators) and ``failures`` from the last checkpoint; return the
        number of samples it covers (0, and a fresh journal, when there is none or ``resume`` is off)."""
        saved = None
        if self.resume and self.path.is_file():
            try:
                saved = pickle.loads(self.path.read_bytes())
            except Exception as e:
                raise CamlocValueError(f"`--resume` needs a readable evaluation state in {self.path}; {e}") from e
            check_same_options(saved["options"], self.options, self.out)
        self._fresh = saved is None or saved["state"] is None
        if saved is None or saved["state"] is None:
            with _critical():
                self._save_blob(None, [], 0)
                self.journal.open()
            return 0
        per_image = self.journal.open(size=saved["journal"][0], lines=saved["journal"][1])
        for name, value in vars(saved["state"]).items():
            setattr(state, name, value)
        state.per_image = per_image
        failures[:] = saved["failures"]
        self._written = len(per_image)
        return int(saved["done"])

    def _save_blob(self, state: Any, failures: list[dict[str, str]], done: int) -> None:
        blob = {
            "options": self.options,
            "state": state,
            "failures": list(failures),
            "done": done,
            "journal": [self.journal.size, self.journal.lines],
        }
        atomic_write_bytes(self.path, pickle.dumps(blob, protocol=pickle.HIGHEST_PROTOCOL))

    def save(self, state: Any, failures: list[dict[str, str]], done: int, *, force: bool = False) -> None:
        """Checkpoint after a batch: ``done`` samples (a prefix) are in ``state`` and ``failures``."""
        self._batches += 1
        if not force and self._batches % self.every:
            return
        import copy

        with _critical():
            for rec in state.per_image[self._written :]:
                self.journal.write(rec)
            self._written = len(state.per_image)
            self.journal.sync()
            light = copy.copy(state)
            light.per_image = []
            self._save_blob(light, failures, done)

    def finish(self) -> None:
        """The evaluation's outputs are written: drop the checkpoint and its journal."""
        self.journal.close()
        with _critical():
            for p in (self.path, self.journal.path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)

    def close(self) -> None:
        self.journal.close()

    def discard_if_unused(self) -> bool:
        """Close; and when this fresh evaluation failed before its first batch was checkpointed (e.g. on a bad
        option), remove its state, journal and ``out_dir`` if left empty. ``True`` if so."""
        self.close()
        if not self._fresh or self._batches or self._written:
            return False
        _remove_run(self.out, (self.path, self.journal.path))
        return True


def _remove_run(out: Path, files: Sequence[Path]) -> None:
    """Delete a failed fresh run's own ``files``, then ``out`` if that left it empty (the user's files stay)."""
    for p in files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
    with contextlib.suppress(OSError):
        out.rmdir()


def completed_run(manifest: Path, command: str, options: dict[str, Any], keys: Sequence[str]) -> dict[str, Any] | None:
    """The manifest of a finished run with these options (``None`` when there is none); a finished run with other
    options is refused like an unfinished one."""
    doc = _read_json(manifest)
    if doc is None or doc.get("command") != command or "options" not in doc:
        return None
    check_same_options(doc["options"], {**options, "inputs": inputs_digest(keys)}, manifest.parent)
    return doc
