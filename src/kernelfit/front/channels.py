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

import numbers

import numpy as np

from ..fit.channels import ChannelFits


def estimate_channels(a, b, shape, *, channel_axis, refit, shared_channels=False, mask=None,
                      **options):
    """``kf.estimate(..., channel_axis=, shared_channels=)``: split the channels, fit, stack.

    Returns a :class:`ChannelFits` (one fit per channel) or, with ``shared_channels=True``,
    the :class:`~kernelfit.KernelFit` of one kernel for all channels (its ``residual`` is a
    list, one per channel).  With ``shape=None`` the size and centre are chosen once, from all
    channels together, so that the kernels stack; ``boundary='auto'`` is decided per channel.
    """
    estimate = refit  # the front door, passed in (this module never imports it)
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
