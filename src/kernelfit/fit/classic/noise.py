"""The noise level of a classic fit, and the floor that the rounding of integer data sets."""

from __future__ import annotations

import numpy as np

from ..result import ResidualImages


def quantisation_floor(pairs) -> float:
    n = sum(pair.n_used for pair in pairs)
    return float(sum(pair.n_used * pair.quantisation_var for pair in pairs) / n)


def noise_std_of(residuals: ResidualImages, n_used, p) -> float:
    if n_used <= p:
        return float("nan")
    return float(np.sqrt(residuals.sum_of_squares() / (n_used - p)))
