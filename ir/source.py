"""Source locations: every node remembers the user's file and line that created it."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

# Frames from these folders are library frames; the first frame outside them is the user's.
# transfuse's public examples (the tour, the bench suites) count as user code.
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
_LIBRARY_DIRS = tuple(
    os.path.join(_ROOT, *d.split("/")) + os.sep
    for d in ("ir", "compiler", "runtime", "transfuse/numpy", "transfuse/nn", "transfuse/scipy")
)
_LIBRARY_FILE_PREFIXES = (
    os.path.join(_ROOT, "transfuse", "_"),
    os.path.join(_ROOT, "transfuse", "lax.py"),
    os.path.join(_ROOT, "transfuse", "random.py"),
)
_NUMPY_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__import__("numpy").__file__)))
_SCIPY_DIR = os.path.join(_NUMPY_DIR, "scipy") + os.sep  # SciPy installs beside NumPy
_SKIP = _LIBRARY_DIRS + _LIBRARY_FILE_PREFIXES + (os.path.join(_NUMPY_DIR, "numpy") + os.sep,
                                                  _SCIPY_DIR)


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """Where in user code something happened."""

    file: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"

    def short(self) -> str:
        return f"{os.path.basename(self.file)}:{self.line}"


def _is_library(filename: str) -> bool:
    return filename.startswith(_SKIP) or filename.startswith("<__array_function__")


def user_frame_info(skip_library: bool = True) -> SourceInfo | None:
    """The innermost stack frame that belongs to user code (outside transfuse and NumPy)."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if not (skip_library and _is_library(code.co_filename)):
            return SourceInfo(code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return None


def with_location(message: str, where: SourceInfo | None = None) -> str:
    """Append the user's file and line to an error message."""
    where = where or user_frame_info()
    if where is None:
        return message
    return f"{message}\n  at {where}"


def scipy_caller() -> str | None:
    """The SciPy function the user's code called, when SciPy is on the stack (its dotted
    name, e.g. scipy.linalg._basic.solve_triangular; "a SciPy function" when only SciPy's
    decorator wrappers show), else None."""
    frame = sys._getframe(1)
    found = None
    while frame is not None:
        filename = frame.f_code.co_filename
        module = frame.f_globals.get("__name__", "scipy")
        if filename.startswith(_SCIPY_DIR):
            if not module.startswith("scipy._lib"):  # scipy._lib: decorators' wrappers
                found = f"{module}.{frame.f_code.co_name}"
            elif found is None:
                found = "a SciPy function"
        elif found is not None and not _is_library(filename):
            return found
        frame = frame.f_back
    return found
