"""(moved from kernelfit.channels)"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .result import _jsonable
from .verdict import LEVELS, Verdict
from ..io.atomic import atomic_output


@dataclass
class ChannelFits:
    """Per-channel fits, with their kernels stacked on the channel axis of the input.

    Attributes
    ----------
    fits : list of KernelFit
        One per channel, in order.
    channel_axis : int
        The axis (non-negative, of the 3-D input) that holds the channels; ``kernel``,
        ``stderr`` and ``residual`` have them on the same axis.

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((32, 32, 3))
    >>> k = [[0, 1, 0], [1, 4, 1], [0, 1, 0]]
    >>> b = np.stack([kf.convolve(a[..., c], k) * (c + 1) for c in range(3)], axis=-1)
    >>> fits = kf.estimate(a, b, 3, boundary="fill", channel_axis=-1)
    >>> fits.kernel.shape, np.round(fits.kernel[1, 1], 6).tolist()
    ((3, 3, 3), [4.0, 8.0, 12.0])
    """

    fits: list
    channel_axis: int

    @property
    def kernel(self) -> np.ndarray:
        return self._stack([fit.kernel for fit in self.fits])

    @property
    def stderr(self):
        """Standard errors stacked like ``kernel`` (``None`` if a channel has none)."""
        errors = [fit.stderr for fit in self.fits]
        if any(not isinstance(e, np.ndarray) for e in errors):
            return None
        return self._stack(errors)

    @property
    def residual(self) -> np.ndarray:
        return self._stack([fit.residual for fit in self.fits])

    @property
    def noise_std(self) -> np.ndarray:
        return np.array([fit.noise_std for fit in self.fits])

    @property
    def converged(self) -> bool:
        return all(fit.converged for fit in self.fits)

    @property
    def verdict(self):
        """The worst channel's :class:`~kernelfit.fit.verdict.Verdict`, its reasons prefixed
        by their channel."""
        verdicts = [fit.verdict for fit in self.fits]
        level = max((v.level for v in verdicts), key=LEVELS.index)
        reasons = tuple(f"channel {c}: {reason}" for c, v in enumerate(verdicts)
                        for reason in v.reasons)
        return Verdict(level, reasons, {"channels": [v.checks for v in verdicts]})

    @property
    def message(self) -> str:
        return "; ".join(f"channel {c}: {fit.message}" for c, fit in enumerate(self.fits)
                         if fit.message)

    # Geometry and model are those of every channel's fit.
    shape = property(lambda self: self.fits[0].shape)
    center = property(lambda self: self.fits[0].center)
    boundary = property(lambda self: self.fits[0].boundary)
    model = property(lambda self: self.fits[0].model)

    def _stack(self, arrays) -> np.ndarray:
        return np.stack(arrays, axis=self.channel_axis)

    def report(self, path, a=None, b=None, *, title=None, max_pairs=3):
        """Write one self-contained HTML page with every channel's report (see
        :meth:`kernelfit.KernelFit.report`); ``a``, ``b`` carry their channels on
        :attr:`channel_axis` (a 2-D ``a`` serves every channel)."""
        from ..report.html import write_report

        return write_report(self, path, a, b, title=title, max_pairs=max_pairs)

    def summary(self) -> str:
        """Every channel's summary, each under a heading."""
        return "\n".join(f"--- channel {c} ---\n{fit.summary()}"
                         for c, fit in enumerate(self.fits))

    def to_dict(self) -> dict:
        """JSON-safe: the stacked kernel and every channel's ``to_dict()``."""
        return {"kernel": _jsonable(self.kernel), "channel_axis": self.channel_axis,
                "channels": [fit.to_dict() for fit in self.fits]}

    def save(self, path) -> None:
        """Write ``.json`` (``to_dict``) or ``.npz`` (stacked kernel and stderr + JSON), whole
        or not at all."""
        path = Path(path)
        if path.suffix.lower() not in (".json", ".npz"):
            raise ValueError(f"path={str(path)!r}: ChannelFits.save writes .json or .npz files")
        with atomic_output(path) as temp_path:
            if path.suffix.lower() == ".json":
                temp_path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
            else:
                stderr = self.stderr
                np.savez(temp_path, kernel=self.kernel,
                         stderr=np.full(self.kernel.shape, np.nan) if stderr is None else stderr,
                         metadata=json.dumps(self.to_dict()))
