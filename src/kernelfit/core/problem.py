"""The description of one fit: what the front door validated, and what every fit reads.

:func:`kernelfit.estimate` turns its arguments into one :class:`FitProblem` after checking
each option once (:mod:`kernelfit.front.options`); the dispatch
(:mod:`kernelfit.front.dispatch`) reads it to choose the fit, and the fit reads the pairs,
the kernel's parametrisation (``model``, ``model_options``), the nuisance blocks
(``background``), the loss, the penalty (``reg``, ``lam``) and the constraints (``nonneg``,
``normalize``) from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FitProblem:
    """A validated fit request; ``pairs`` are filled in once the images are prepared.

    Attributes
    ----------
    shape : (int, int)
        Kernel size.
    boundary : str
        Normalised boundary rule (``'valid'``, ``'fill'``, ...).
    model : str or KernelModel
        ``'free'``, a structured model's name, a parametric family's name or object.
    loss, reg, lam, nonneg, normalize, method, noise_std, background
        As for :func:`kernelfit.estimate` (``background`` a degree or None).
    model_options : dict
        The options of the model or method (``tol``, ``f_scale``, ``sigma`` bounds, ...).
    single : bool
        One image pair given as arrays (results unwrap lists).
    preparation : dict
        What preparing the pairs needs: ``boundary``, ``center``, ``mask``, ``saturation``,
        ``saturation_a``.
    pairs : list of PreparedPair
        The prepared pairs (empty until :meth:`with_pairs`).
    """

    shape: tuple[int, int]
    boundary: str
    model: Any = "free"
    loss: str = "l2"
    reg: str | None = None
    lam: Any = "auto"
    nonneg: bool = False
    normalize: float | None = None
    method: str | None = None
    noise_std: float | None = None
    background: int | None = None
    model_options: dict = field(default_factory=dict)
    single: bool = True
    preparation: dict = field(default_factory=dict)
    pairs: list = field(default_factory=list)

    def with_pairs(self, pairs) -> "FitProblem":
        """The same problem with its prepared pairs."""
        return dataclasses.replace(self, pairs=list(pairs))
