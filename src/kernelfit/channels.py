"""Images with a channel axis (colour, spectral stacks): one kernel per channel, or one shared.

``kf.estimate(a, b, shape, channel_axis=-1)`` splits ``a`` and ``b`` along that axis and fits
each channel on its own (a lens blurs red and blue differently); the kernels come back stacked
on the same axis in a :class:`ChannelFits`.  ``shared_channels=True`` fits one kernel to every
channel at once: the channels are pairs of one fit (their statistics add), which is the
least-squares kernel when the blur does not depend on the colour.

``a`` may be one 2-D image for every channel (a grey target observed by a colour camera);
``mask`` is 2-D (the same pixels in every channel) or shaped like ``b``.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import atomic_output
from .result import KernelFit, _jsonable


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
        from .report import write_report

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


def estimate_channels(a, b, shape, *, channel_axis, shared_channels=False, mask=None,
                      **options):
    """``kf.estimate(..., channel_axis=, shared_channels=)``: split the channels, fit, stack.

    Returns a :class:`ChannelFits` (one fit per channel) or, with ``shared_channels=True``,
    the :class:`~kernelfit.KernelFit` of one kernel for all channels (its ``residual`` is a
    list, one per channel).  With ``shape=None`` the size and centre are chosen once, from all
    channels together, so that the kernels stack; ``boundary='auto'`` is decided per channel.
    """
    from .estimate import estimate

    if not isinstance(shared_channels, (bool, np.bool_)):
        raise TypeError(f"shared_channels={shared_channels!r} must be True or False")
    if channel_axis is None:
        raise ValueError("shared_channels=True needs channel_axis= (the axis that holds the "
                         "channels)")
    b = _as_stack(b, "b")
    axis = _check_axis(channel_axis, b.ndim)
    b_planes = list(np.moveaxis(b, axis, 0))
    a_planes = _planes_of_a(a, axis, b.shape)
    masks = _planes_of_mask(mask, axis, b.shape)
    if shared_channels:
        return estimate(a_planes, b_planes, shape, mask=None if mask is None else masks,
                        **options)
    if shape is None:
        # The kernels must stack, so one size and centre for all channels: the window chosen
        # for their mean kernel (its support is the union of theirs), on the 'valid' interior
        # (no assumption about the edges; each channel's boundary rule is its own below).
        choice = estimate(a_planes, b_planes, None, mask=None if mask is None else masks,
                          **dict(options, boundary="valid"))
        shape = choice.shape
        options = dict(options, center=choice.center)
    fits = [estimate(a_c, b_c, shape, mask=m_c, **options)
            for a_c, b_c, m_c in zip(a_planes, b_planes, masks)]
    return ChannelFits(fits, axis)


def _as_stack(x, name) -> np.ndarray:
    if isinstance(x, (list, tuple)):
        raise TypeError(f"{name}: with channel_axis, give one array with a channel axis, "
                        "not a list of images")
    arr = np.asarray(x)
    if arr.ndim != 3:
        raise ValueError(f"{name} has shape {arr.shape}; with channel_axis it must be 3-D "
                         "(two image axes and the channel axis)")
    return arr


def _check_axis(channel_axis, ndim) -> int:
    if isinstance(channel_axis, (bool, np.bool_)) or not isinstance(channel_axis,
                                                                      numbers.Integral):
        raise TypeError(f"channel_axis={channel_axis!r} must be an integer axis")
    if not -ndim <= channel_axis < ndim:
        raise ValueError(f"channel_axis={channel_axis} is out of range for a {ndim}-D b")
    return int(channel_axis) % ndim


def _planes_of_a(a, axis, b_shape) -> list:
    """``a``'s channels, or the one 2-D ``a`` repeated for each channel of ``b``."""
    n = b_shape[axis]
    if isinstance(a, (list, tuple)):
        raise TypeError("a: with channel_axis, give one array (3-D like b, or 2-D for every "
                        "channel), not a list of images")
    arr = np.asarray(a)
    if arr.ndim == 2:
        return [arr] * n
    if arr.ndim != 3 or arr.shape[axis] != n:
        raise ValueError(f"a has shape {arr.shape}; with channel_axis={axis} and b of shape "
                         f"{b_shape} it must be 2-D or 3-D with {n} channels on axis {axis}")
    return list(np.moveaxis(arr, axis, 0))


def _planes_of_mask(mask, axis, b_shape) -> list:
    n = b_shape[axis]
    if mask is None:
        return [None] * n
    m = np.asarray(mask)
    if m.ndim == 2:
        return [m] * n
    if m.shape != tuple(b_shape):
        raise ValueError(f"mask has shape {m.shape}; with channel_axis it must be 2-D (every "
                         f"channel) or shaped like b {tuple(b_shape)}")
    return list(np.moveaxis(m, axis, 0))
