"""Atomic outputs: a file appears complete at its destination, or not at all.

A writer writes to a temporary file in the destination's directory, which replaces the
destination only once the writer has finished; a failure (or an interrupt) removes it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_output", "check_writable", "write_atomically"]


def check_writable(path) -> Path:
    """``path`` as a Path, if a file can be created there (any extension); else ValueError:
    a directory that does not exist or that the user may not write to, or a directory path.

    Examples
    --------
    >>> check_writable("notes.txt").name
    'notes.txt'
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ValueError(f"{path}: cannot write, directory {directory} does not exist")
    if path.is_dir():
        raise ValueError(f"{path}: cannot write, it is a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: cannot write, directory {directory} is not writable")
    return path


def write_atomically(path: Path, writer, data) -> None:
    """Run ``writer(temp_path, data)`` and move the finished file onto ``path``."""
    with atomic_output(path) as temp_path:
        writer(str(temp_path), data)


@contextlib.contextmanager
def atomic_output(path: Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else vanishes.

    Same directory, so that ``os.replace`` is a rename within one file system (atomic); same
    suffix, so that writers which choose the format by extension choose the right one.
    """
    try:
        handle = tempfile.NamedTemporaryFile(
            dir=path.parent if str(path.parent) else ".",
            prefix=f".{path.stem}.",
            suffix=path.suffix,
            delete=False,
        )
    except OSError as exc:
        raise ValueError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    handle.close()
    temp_path = Path(handle.name)
    try:
        yield temp_path
        # mkstemp creates files readable by the owner only; give the result the permissions
        # an ordinary new file would get.
        os.chmod(temp_path, 0o666 & ~_current_umask())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp_path.unlink()
        raise


def _current_umask() -> int:
    # The only portable way to read the umask is to set it and restore it.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
