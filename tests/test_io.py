"""Atomic writers: the destination appears complete or not at all, and no temporary file is left."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camloc._io import (
    JsonlWriter,
    atomic_open,
    atomic_save_png,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from camloc.errors import CamlocTypeError, CamlocValueError


class Boom(RuntimeError):
    pass


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_write_bytes_text_json_roundtrip_and_create_parents(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a" / "b" / "x.bin", b"\x00\x01\xff")
    assert (tmp_path / "a" / "b" / "x.bin").read_bytes() == b"\x00\x01\xff"
    atomic_write_text(tmp_path / "t.txt", "héllo\nwörld\n")
    assert (tmp_path / "t.txt").read_bytes() == "héllo\nwörld\n".encode()
    obj = {"b": [1, 2.5, None], "a": "ünï", "nested": {"k": True}}
    atomic_write_json(tmp_path / "o.json", obj)
    text = (tmp_path / "o.json").read_text(encoding="utf-8")
    assert json.loads(text) == obj
    assert text.endswith("\n") and '\n  "b"' in text  # indent=2, key order kept
    atomic_write_json(tmp_path / "c.json", [1, 2], indent=None)
    assert (tmp_path / "c.json").read_text() == "[1, 2]\n"
    assert _listing(tmp_path) == ["a", "c.json", "o.json", "t.txt"]


def test_overwrite_replaces_content(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old content that is long")
    atomic_write_text(p, "new")
    assert p.read_text() == "new"
    assert _listing(tmp_path) == ["f.txt"]


def test_final_file_has_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("mode", ["w", "wb"])
def test_atomic_open_exception_leaves_no_file_and_no_temp(tmp_path: Path, mode: str) -> None:
    dest = tmp_path / "sub" / "out.txt"
    with pytest.raises(Boom), atomic_open(dest, mode) as fh:
        fh.write("partial" if mode == "w" else b"partial")
        raise Boom
    assert not dest.exists()
    assert _listing(tmp_path / "sub") == []


def test_atomic_open_exception_keeps_previous_version(tmp_path: Path) -> None:
    dest = tmp_path / "out.txt"
    dest.write_text("version 1")
    with pytest.raises(Boom), atomic_open(dest) as fh:
        fh.write("version 2, half written")
        raise Boom
    assert dest.read_text() == "version 1"
    assert _listing(tmp_path) == ["out.txt"]


def test_atomic_open_writes_to_temp_then_replaces(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    with atomic_open(dest, "wb") as fh:
        fh.write(b"abc")
        tmp = Path(fh.name)
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.bin.") and tmp.name.endswith(".tmp")
        assert not dest.exists()
    assert dest.read_bytes() == b"abc"
    assert not tmp.exists()


def test_json_unserialisable_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "o.json", {"x": object()})
    assert _listing(tmp_path) == []


def test_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(CamlocValueError, match="`mode` must be one of 'w', 'wb'"):
        atomic_open(tmp_path / "x", "a").__enter__()
    with pytest.raises(CamlocTypeError, match="`data` must be bytes"):
        atomic_write_bytes(tmp_path / "x", "text")  # type: ignore[arg-type]
    with pytest.raises(CamlocTypeError, match="`text` must be a str"):
        atomic_write_text(tmp_path / "x", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(CamlocTypeError, match=r"`path` must be a str or os\.PathLike"):
        atomic_write_text(3, "x")  # type: ignore[arg-type]
    assert _listing(tmp_path) == []


def test_save_png_from_array_and_pil(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    atomic_save_png(tmp_path / "a.png", arr)
    with Image.open(tmp_path / "a.png") as im:
        assert im.format == "PNG" and im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), arr)
    gray = Image.fromarray(arr[:, :, 0])
    atomic_save_png(tmp_path / "g.png", gray)
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), arr[:, :, 0])
    with pytest.raises(CamlocValueError, match="dtype uint8"):
        atomic_save_png(tmp_path / "f.png", arr.astype(np.float32))
    with pytest.raises(CamlocValueError, match=r"shape \(H, W\), \(H, W, 3\)"):
        atomic_save_png(tmp_path / "f.png", arr[:, :, :2])
    assert _listing(tmp_path) == ["a.png", "g.png"]


def test_save_png_failure_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        fp.write(b"\x89PNG partial")  # type: ignore[attr-defined]
        raise Boom

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(Boom):
        atomic_save_png(tmp_path / "a.png", Image.new("RGB", (2, 2)))
    assert _listing(tmp_path) == []


def test_save_png_array_round_trips_rgb_rgba_gray(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for shape in ((5, 7, 3), (5, 7, 4), (5, 7)):
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
        for level in (0, 1, 9):
            atomic_save_png(tmp_path / "a.png", arr, compress_level=level)
            with Image.open(tmp_path / "a.png") as im:
                assert np.array_equal(np.asarray(im), arr)


def test_jsonl_writer_commit(tmp_path: Path) -> None:
    dest = tmp_path / "results.jsonl"
    w = JsonlWriter(dest)
    w.write({"image": "a.jpg", "iou": 0.5})
    w.write({"image": "b.jpg", "iou": 1.0, "name": "ü"})
    tmp = w.temp_path
    assert tmp is not None and tmp.exists() and not dest.exists()
    # flushed after every line: a reader can follow progress in the temp file
    assert len(tmp.read_text(encoding="utf-8").splitlines()) == 2
    assert w.commit() == dest
    assert not tmp.exists() and w.closed and w.lines_written == 2
    lines = dest.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == [
        {"image": "a.jpg", "iou": 0.5},
        {"image": "b.jpg", "iou": 1.0, "name": "ü"},
    ]
    with pytest.raises(CamlocValueError, match="`JsonlWriter` must be open"):
        w.write({"late": 1})
    assert _listing(tmp_path) == ["results.jsonl"]


def test_jsonl_writer_abort_and_context_manager(tmp_path: Path) -> None:
    dest = tmp_path / "results.jsonl"
    dest.write_text('{"old": 1}\n')
    w = JsonlWriter(dest)
    w.write({"new": 1})
    w.abort()
    w.abort()  # idempotent
    assert dest.read_text() == '{"old": 1}\n'
    assert _listing(tmp_path) == ["results.jsonl"]

    with pytest.raises(Boom), JsonlWriter(dest) as w2:
        w2.write({"new": 2})
        raise Boom
    assert dest.read_text() == '{"old": 1}\n'
    assert _listing(tmp_path) == ["results.jsonl"]

    with JsonlWriter(dest, append=True) as w3:
        w3.write({"new": 3})
    assert dest.read_text().splitlines() == ['{"old": 1}', '{"new": 3}']
    assert _listing(tmp_path) == ["results.jsonl"]


def test_jsonl_unserialisable_row_writes_nothing(tmp_path: Path) -> None:
    with JsonlWriter(tmp_path / "r.jsonl") as w:
        w.write({"a": 1})
        with pytest.raises(TypeError):
            w.write({"b": object()})
        w.write({"c": 3})
    assert (tmp_path / "r.jsonl").read_text().splitlines() == ['{"a": 1}', '{"c": 3}']
    assert w.lines_written == 2


def test_fsync_false_skips_fsync_but_stays_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    atomic_write_bytes(tmp_path / "a.bin", b"abc")
    assert len(calls) == 1
    atomic_write_bytes(tmp_path / "b.bin", b"xyz", fsync=False)
    assert len(calls) == 1  # no second fsync
    assert (tmp_path / "b.bin").read_bytes() == b"xyz"
    assert _listing(tmp_path) == ["a.bin", "b.bin"]  # no temporaries left
