"""Centred statistics: the least-squares problem of an image with a large mean, kept exact.

When ``a`` carries a large mean ``μ`` (a DC offset of 30000 on a texture of 1), every entry
of ``G = XᵀX`` is dominated by ``μ²n``: one eigenvalue is ``~μ²·n·p`` while the texture's are
``~σ²·n``.  ``G`` itself is accurate to its last digit, but its condition number is about
``p·(μ/σ)²`` -- the square of the design's -- so a Cholesky solve loses that many digits and
the direct solver calls the kernel undetermined, although QR on the design (``lstsq``) finds
it to well within its standard error.

The mean is one direction, and it can be split off exactly.  With ``x̄`` the mean row of the
design over the used pixels (``μ𝟙`` plus the small mean of the centred windows) and ``b̄`` the
mean of ``b``::

    G = Ḡ + N·x̄x̄ᵀ,      c = c̄ + N·b̄·x̄,

where ``Ḡ = Σ (x_i − x̄)(x_i − x̄)ᵀ`` and ``c̄ = Σ (x_i − x̄)(b_i − b̄)`` are the statistics of
the centred problem.  They are computed from the extended images minus one constant ``μ``
(which changes no difference ``x_i − x̄``) and ``b − b̄``, so they hold only the texture's
scale and are accurate to it; ``Ḡ`` is as well conditioned as the texture.  The rank-one
part is solved in closed form (:func:`kernelfit.solvers.direct.solve_centred`).  One ``μ``
and one ``b̄`` serve every pair of a multi-pair fit, which keeps the split exact for their sum.

:func:`needs_centring` says when this pays: when the mean exceeds :data:`CENTRE_ABOVE`
standard deviations of the extended images; below it the plain statistics lose less than
a few digits, and they are used unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.signal

from .compute import statistics
from .gram import SufficientStatistics

# Mean / standard deviation of the extended images above which the statistics are centred:
# G's condition number then exceeds p·1e6, a loss of more than 6 + log10(p) digits.
CENTRE_ABOVE = 1e3


@dataclass
class CentredStatistics:
    """The statistics split into a centred part and the mean's rank-one part.

    Attributes
    ----------
    gram, rhs : ndarray
        ``Ḡ`` and ``c̄`` (convolution orientation, C order, as :class:`SufficientStatistics`).
    mean_row : ndarray
        ``x̄``, the mean row of the design over the used pixels.
    b_mean : float
        ``b̄``, the mean of ``b`` over the used pixels.
    n_used : int
        ``N``.
    full : SufficientStatistics
        ``G = Ḡ + N·x̄x̄ᵀ``, ``c = c̄ + N·b̄·x̄`` and ``bᵀb``: the plain statistics (to
        rounding), for everything that reads them.
    """

    gram: np.ndarray
    rhs: np.ndarray
    mean_row: np.ndarray
    b_mean: float
    n_used: int
    full: SufficientStatistics


def needs_centring(pairs) -> bool:
    """Whether the extended images' mean exceeds :data:`CENTRE_ABOVE` standard deviations.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.design import prepare_pair
    >>> a = 30000 + np.random.default_rng(0).random((20, 20))
    >>> needs_centring([prepare_pair(a, a, 3, boundary="valid")])
    True
    >>> needs_centring([prepare_pair(a - 30000, a, 3, boundary="valid")])
    False
    """
    total = sum(pair.extended.size for pair in pairs)
    mean = sum(float(np.sum(pair.extended)) for pair in pairs) / total
    spread = sum(float(np.sum(np.square(pair.extended - mean))) for pair in pairs) / total
    return mean * mean > CENTRE_ABOVE ** 2 * spread


def centred_statistics(pairs, shape, *, weights) -> CentredStatistics:
    """The :class:`CentredStatistics` of prepared pairs (``weights``: each pair's 0/1 weights
    or None, as for :func:`~kernelfit.stats.compute.statistics`).

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.design import prepare_pair
    >>> from kernelfit.stats.compute import statistics
    >>> rng = np.random.default_rng(0)
    >>> a = 100 + rng.random((30, 30))
    >>> pair = prepare_pair(a, rng.random((28, 28)), 3, boundary="valid")
    >>> split = centred_statistics([pair], (3, 3), weights=[None])
    >>> plain = statistics(pair.extended, pair.b_used, (3, 3))
    >>> bool(np.allclose(split.full.gram, plain.gram, rtol=1e-12))
    True
    """
    used = [np.ones(pair.b_used.shape) if w is None else w for pair, w in zip(pairs, weights)]
    n = float(sum(np.sum(u) for u in used))
    mu = sum(float(np.sum(pair.extended)) for pair in pairs) / sum(p.extended.size for p in pairs)
    b_mean = sum(float(np.sum(u * pair.b_used)) for pair, u in zip(pairs, used)) / n
    gram = rhs = window_sums = None
    btb = 0.0
    for pair, w, u in zip(pairs, weights, used):
        centred = pair.extended - mu
        part = statistics(centred, (pair.b_used - b_mean) * u, shape, weights=w)
        sums = scipy.signal.correlate(centred, u, mode="valid")[::-1, ::-1].ravel()
        gram = part.gram if gram is None else gram + part.gram
        rhs = part.rhs if rhs is None else rhs + part.rhs
        window_sums = sums if window_sums is None else window_sums + sums
        btb += float(np.sum(u * pair.b_used * pair.b_used))
    offset = window_sums / n                      # mean of the centred windows: small
    gram = gram - n * np.outer(offset, offset)    # Ḡ: no cancellation, offset is small
    mean_row = mu + offset
    full = SufficientStatistics(gram + n * np.outer(mean_row, mean_row),
                                rhs + (n * b_mean) * mean_row, btb, int(round(n)),
                                tuple(shape))
    return CentredStatistics(gram, rhs, mean_row, b_mean, int(round(n)), full)
