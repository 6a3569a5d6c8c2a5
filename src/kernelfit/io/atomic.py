"""Atomic outputs: a file appears complete at its destination, or not at all.

A writer writes to a temporary file in the destination's directory, which replaces the
destination only once the writer has finished; a failure (or an interrupt) removes it.

Several outputs of one run (a kernel, its JSON, its report) go through one
:func:`atomic_outputs` set: each is written to its own temporary file, and they are all
renamed onto their destinations at the end, with SIGINT and SIGTERM held back while the
renames run, so that a run leaves all of its outputs or none.  A full disk (``ENOSPC``, or
the short write NumPy reports as "N requested and M written") is reported as a
:class:`DiskFullError` that names the destination.  :func:`check_not_inputs` refuses an
output that is one of the run's inputs, through symbolic or hard links included.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import tempfile
from pathlib import Path

__all__ = ["DiskFullError", "atomic_output", "atomic_outputs", "check_not_inputs",
           "check_writable", "write_atomically"]


class DiskFullError(OSError):
    """A write that ran out of space; the message names the file the user asked for.

    Examples
    --------
    >>> str(DiskFullError("k.npy"))  # doctest: +ELLIPSIS
    'k.npy: cannot write, the disk is full (ENOSPC: ...)'
    """

    def __init__(self, path, detail=""):
        message = (f"{path}: cannot write, the disk is full "
                   f"(ENOSPC: {os.strerror(errno.ENOSPC)})")
        super().__init__(errno.ENOSPC, message + (f"; {detail}" if detail else ""))
        self.filename = str(path)
        self.detail = detail

    def __str__(self) -> str:
        return self.strerror


# numpy's ndarray.tofile (behind np.save) reports a short write with this text and no errno.
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")


def _as_disk_full(exc: OSError, path):
    """The DiskFullError that ``exc`` means for ``path``, or None if it is something else."""
    if isinstance(exc, DiskFullError):  # named after a temporary file by an inner writer
        return DiskFullError(path, exc.detail)
    if exc.errno == errno.ENOSPC:
        return DiskFullError(path)
    short = _SHORT_WRITE.search(str(exc))
    if short:
        requested, written = short.groups()
        return DiskFullError(path, f"{written} of {requested} bytes were written")
    return None


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


def check_not_inputs(outputs, inputs) -> None:
    """Refuse an output that is one of the inputs, or the same file as another output.

    Two paths are the same file when they resolve to the same path (symbolic links followed)
    or, for files that exist, when they have the same device and inode (hard links).

    Parameters
    ----------
    outputs, inputs : dict of str to path
        What each path is (named in the message, e.g. ``"-o"`` or ``"A"``) and the path;
        ``None`` paths are skipped.

    Raises
    ------
    ValueError
        Naming the output and the input it would overwrite.

    Examples
    --------
    >>> check_not_inputs({"-o": "a.png"}, {"A": "./a.png"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: -o a.png is the input A (./a.png): kernelfit never overwrites its inputs; ...
    """
    outputs = [(name, path) for name, path in outputs.items() if path is not None]
    inputs = [(name, path) for name, path in inputs.items() if path is not None]
    for i, (name, path) in enumerate(outputs):
        for other, source in inputs:
            if _same_file(path, source):
                raise ValueError(f"{name} {path} is the input {other} ({source}): kernelfit "
                                 "never overwrites its inputs; choose another output path")
        for other, target in outputs[:i]:
            if _same_file(path, target):
                raise ValueError(f"{name} {path} is also the output {other} ({target}); "
                                 "give each output its own path")


def _same_file(first, second) -> bool:
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        one, two = os.stat(first), os.stat(second)
    except OSError:  # one does not exist (yet): only the resolved paths can tell
        return False
    return (one.st_dev, one.st_ino) == (two.st_dev, two.st_ino)


def write_atomically(path: Path, writer, data) -> None:
    """Run ``writer(temp_path, data)`` and move the finished file onto ``path``."""
    with atomic_output(path) as temp_path:
        writer(str(temp_path), data)


@contextlib.contextmanager
def atomic_output(path: Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else vanishes.

    Same directory, so that ``os.replace`` is a rename within one file system (atomic); same
    suffix, so that writers which choose the format by extension choose the right one.  A
    full disk is raised as :class:`DiskFullError` naming ``path``.
    """
    path = Path(path)
    temp_path = _reserve(path)
    try:
        with _disk_full_named(path):
            yield temp_path
        _finish(temp_path, path)
    except BaseException:
        _remove_quietly(temp_path)
        raise


@contextlib.contextmanager
def atomic_outputs():
    """A set of outputs that all appear at the end of the ``with`` block, or none does.

    Yields an :class:`OutputSet`; ``outputs.write(path, writer, *args)`` runs
    ``writer(temp_path, *args)`` on a temporary file beside ``path``.  When the block ends
    normally every temporary file is renamed onto its destination; when it raises (an
    error, KeyboardInterrupt, or whatever a signal handler raises) every temporary file is
    removed and the destinations are left as they were.

    Examples
    --------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> def text(path, words):
    ...     with open(path, "w") as f:
    ...         f.write(words)
    >>> with atomic_outputs() as outputs:
    ...     outputs.write(os.path.join(d, "a.txt"), text, "one")
    ...     outputs.write(os.path.join(d, "b.txt"), text, "two")
    >>> sorted(os.listdir(d))
    ['a.txt', 'b.txt']
    """
    outputs = OutputSet()
    try:
        yield outputs
    except BaseException:
        outputs.discard()
        raise
    outputs.commit()


class OutputSet:
    """Outputs written to temporary files, renamed together by :meth:`commit`."""

    def __init__(self):
        self._pending: list[tuple[Path, Path]] = []   # (temporary, destination)
        self.committed = False

    def write(self, path, writer, *args) -> None:
        """Reserve a temporary file beside ``path`` and run ``writer(temp_path, *args)``."""
        path = Path(path)
        with _signals_held():  # a temporary file created is a temporary file recorded
            temp_path = _reserve(path)
            self._pending.append((temp_path, path))
        with _disk_full_named(path):
            writer(str(temp_path), *args)

    def commit(self) -> None:
        """Rename every temporary file onto its destination, signals held back meanwhile."""
        try:
            with _signals_held():
                while self._pending:
                    temp_path, path = self._pending[0]
                    _finish(temp_path, path)
                    self._pending.pop(0)
                self.committed = True
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the temporary files not renamed yet."""
        while self._pending:
            _remove_quietly(self._pending.pop()[0])


def _reserve(path: Path) -> Path:
    """Create an empty temporary file beside ``path`` (it reserves the name) and return it."""
    try:
        handle = tempfile.NamedTemporaryFile(
            dir=path.parent if str(path.parent) else ".",
            prefix=f".{path.stem}.",
            suffix=path.suffix,
            delete=False,
        )
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(path) from exc
        raise ValueError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    handle.close()
    return Path(handle.name)


@contextlib.contextmanager
def _disk_full_named(path):
    try:
        yield
    except OSError as exc:
        full = _as_disk_full(exc, path)
        if full is None:
            raise
        raise full from exc


def _finish(temp_path: Path, path: Path) -> None:
    # mkstemp creates files readable by the owner only; give the result the permissions
    # an ordinary new file would get.
    os.chmod(temp_path, 0o666 & ~_current_umask())
    os.replace(temp_path, path)


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM back (delivered when the block ends) where the OS allows it:
    the renames of a set of outputs are not to be cut in the middle."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _remove_quietly(path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _current_umask() -> int:
    # The only portable way to read the umask is to set it and restore it.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
