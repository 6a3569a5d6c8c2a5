"""Progress of long computations, with an ETA, where the caller asked for it.

Library calls are silent by default.  :func:`progress_to` (the CLI uses it for large images
and ``--verbose``) turns on a tqdm bar on a stream for every long loop inside the block: the
tiles of a tiled pass, the iterations of a matrix-free solve.  Like :mod:`kernelfit.core.threads`
the setting lives in a :mod:`contextvars` variable, so it reaches only the calls made inside
the block, in that thread.

Examples
--------
>>> import io
>>> stream = io.StringIO()
>>> with progress_to(stream):
...     total = sum(steps(range(3), total=3, label="tiles"))
>>> total, "tiles" in stream.getvalue()
(3, True)
>>> sum(steps(range(3), total=3, label="tiles"))   # no bar outside the block
3
"""

from __future__ import annotations

import contextlib
import contextvars

_STREAM = contextvars.ContextVar("kernelfit_progress", default=None)


@contextlib.contextmanager
def progress_to(stream):
    """Show progress bars (tqdm, with an ETA) on ``stream`` for long loops in the block."""
    token = _STREAM.set(stream)
    try:
        yield stream
    finally:
        _STREAM.reset(token)


def steps(iterable, *, total, label):
    """``iterable``, with a progress bar of ``total`` steps when :func:`progress_to` is on."""
    stream = _STREAM.get()
    if stream is None or total is None or total < 2:
        yield from iterable
        return
    from tqdm import tqdm

    with tqdm(iterable, total=total, desc=f"kernelfit: {label}", file=stream, unit="step",
              leave=False, mininterval=0.5, dynamic_ncols=False, ncols=80) as bar:
        yield from bar
