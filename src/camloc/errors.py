"""Exceptions raised by camloc.

Every user-facing error is a :class:`CamlocError` and also subclasses the matching built-in
(:class:`ValueError` or :class:`TypeError`), so ``except ValueError`` keeps working. Messages follow
one style: they name the argument, what was expected and what was found.
"""

from __future__ import annotations

__all__ = [
    "AnnotationError",
    "CamlocError",
    "CamlocTypeError",
    "CamlocValueError",
    "ImageLoadError",
    "ImageTooLargeError",
    "UnsupportedModelError",
]


class CamlocError(Exception):
    """Base class of every error raised on purpose by camloc."""


class CamlocValueError(CamlocError, ValueError):
    """An argument has the right type but a wrong value or shape."""


class CamlocTypeError(CamlocError, TypeError):
    """An argument has the wrong type."""


class UnsupportedModelError(CamlocValueError):
    """The model's head is not ``pool -> linear`` (or cannot be found), so its CAM is not defined."""


class ImageLoadError(CamlocValueError):
    """An image file is missing, truncated, not an image, empty or too large to decode safely."""


class ImageTooLargeError(ImageLoadError):
    """An image declares more pixels than the decoder's limit (a possible decompression bomb)."""


class AnnotationError(CamlocValueError):
    """An annotation file is malformed; the message names the file, the line and the problem."""

    def __init__(self, path: object, line: int | None, problem: str) -> None:
        where = f"{path}" if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem
