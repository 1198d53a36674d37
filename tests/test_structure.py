"""One place for each shared job: atomic writers, the `fail` helper, the image-extension list.

These tests read the source tree: a second implementation of any of them is a regression.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import camloc

SRC = Path(camloc.__file__).parent


def _sources() -> dict[str, str]:
    return {str(p.relative_to(SRC)): p.read_text(encoding="utf-8") for p in sorted(SRC.rglob("*.py"))}


def test_only_camloc_io_renames_files_into_place() -> None:
    offenders = [name for name, text in _sources().items() if "os.replace(" in text and name != "_io.py"]
    assert offenders == []


def test_one_fail_helper() -> None:
    pattern = re.compile(r"^def _?fail\(", re.MULTILINE)
    defs = [name for name, text in _sources().items() if pattern.search(text)]
    assert defs == ["_checks.py"]


def test_one_image_extension_list_case_insensitive(tmp_path: Path) -> None:
    from camloc import _train_data
    from camloc.data import _io as data_io
    from camloc.data import images

    assert data_io.IMAGE_EXTENSIONS is images.IMAGE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in images.IMAGE_EXTENSIONS)
    assert not hasattr(_train_data, "IMAGE_SUFFIXES")
    for name in ("a.JPEG", "b.Png", "c.tif", "d.txt"):
        (tmp_path / name).write_bytes(b"")
    index = data_io.FileIndex()
    assert index.find_image(tmp_path, None, "a") == tmp_path / "a.JPEG"
    assert index.find_image(tmp_path, None, "b") == tmp_path / "b.Png"
    assert index.find_image(tmp_path, None, "c") == tmp_path / "c.tif"  # .tif: in the one list now
    assert index.find_image(tmp_path, None, "d") is None  # not an image extension
    assert index.find_image(tmp_path, "d.txt", "d") == tmp_path / "d.txt"  # an explicit file name is taken as is


def test_checks_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, camloc._checks as c, camloc.data._io; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("value", [3, "x"])
def test_fail_message_style(value: object) -> None:
    from camloc._checks import fail
    from camloc.errors import CamlocValueError

    with pytest.raises(CamlocValueError, match=r"^`n` must be positive; got "):
        fail("n", "positive", value)


def _declared() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    root = SRC.parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    deps = list(project["dependencies"])
    # Optional integrations import their package lazily, inside the module that needs it, and declare it as an
    # extra named after the module (camloc.keras -> camloc[keras], camloc.hf, camloc.fit, camloc.ray, camloc.serve).
    extras = project.get("optional-dependencies", {})
    deps += [d for key in ("fit", "hf", "keras", "onnx", "ray", "serve") for d in extras.get(key, [])]
    out = {}
    for d in deps:
        name = re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0]
        out[name.lower()] = d
    return out


_DIST_OF = {
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "swagger_ui_bundle": "swagger-ui-bundle",
}


def test_every_third_party_import_of_the_package_is_declared() -> None:
    # before: models/registry.py imported safetensors, which pyproject did not declare
    import ast
    import sys

    declared = _declared()
    missing = set()
    for name, text in _sources().items():
        for node in ast.walk(ast.parse(text)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            for m in mods:
                top = m.split(".")[0]
                if top == "camloc" or top in sys.stdlib_module_names:
                    continue
                if _DIST_OF.get(top, top).lower() not in declared:
                    missing.add(f"{top} ({name})")
    assert missing == set()


def test_torch_floor_has_the_device_generic_grad_scaler() -> None:
    # torch.amp.GradScaler("cuda", ...) (used by the trainer) first ships in torch 2.3; torchvision 0.18 pairs with it
    declared = _declared()
    assert declared["torch"].startswith("torch>=2.3")
    assert declared["torchvision"].startswith("torchvision>=0.18")
    assert "safetensors" in declared
