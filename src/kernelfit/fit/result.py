"""The one result type every fit returns."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.threads import compute_threads
from ..io.atomic import atomic_output
from ..stats.background import residual_with_background


@dataclass
class KernelFit:
    """An estimated kernel with everything needed to judge and reuse it.

    Attributes
    ----------
    kernel : ndarray
        The estimate in convolution orientation: ``kf.convolve(a, fit.kernel,
        boundary=fit.boundary, center=fit.center)`` predicts ``b``.
    shape : (int, int)
    center : (int, int)
        Kernel index that lands on the output pixel.
    boundary : str
        The boundary mode used.
    model : str
        ``'free'`` for a free-form kernel.
    params : dict
        Fitted parameters of structured/parametric models (``{}`` for free kernels).
    stderr : ndarray or None
        One standard error per kernel coefficient (NaN when not determined).
    cov : ndarray or None
        Covariance of the flattened kernel (C order) or of the parameters: ``σ̂²·G⁻¹`` for
        least squares; under a quadratic regulariser the sampling covariance
        ``σ̂²·H⁻¹GH⁻¹`` (``H = G + λ·n·LᵀL``: the spread around the estimator's own mean,
        without the regularisation bias); ``fit.info['covariance']`` says which.  ``None``
        when not available.
    background : ndarray or None
        Fitted background coefficients (``None``: no background was fitted).
    residual : ndarray or list of ndarray
        ``b − prediction``, NaN where a pixel was not used; one per image pair.  Computed on
        first access (it costs a full-size convolution).
    noise_std : float
        Noise standard deviation estimated from the residuals (per pixel, units of ``b``).
    lam : float or None
        Regularisation weight per pixel (``None`` without regularisation).
    n_used : int
        Number of pixels of ``b`` used.
    converged : bool
        False when the solution cannot be trusted; ``message`` says why and what to change.
    message : str
    method : str
        The solver that ran.
    info : dict
        Diagnostics: condition estimate, rank, effective degrees of freedom, timings.
    """

    kernel: np.ndarray
    shape: tuple[int, int]
    center: tuple[int, int]
    boundary: str
    model: str = "free"
    params: dict = field(default_factory=dict)
    stderr: np.ndarray | None = None
    cov: np.ndarray | None = None
    background: np.ndarray | None = None
    noise_std: float = float("nan")
    lam: float | None = None
    n_used: int = 0
    converged: bool = True
    message: str = ""
    method: str = "normal"
    info: dict = field(default_factory=dict)
    # The residual: an array, a list of arrays, or a callable that makes them (see residual).
    _residual: Any = field(default=None, repr=False)
    _verdict: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def verdict(self):
        """:class:`kernelfit.fit.verdict.Verdict`: ``'ok'``, ``'doubtful'`` or ``'failed'``
        with its reasons (see :mod:`kernelfit.fit.verdict`); assessed on first access, from
        the residual among others."""
        if self._verdict is None:
            from .verdict import assess

            self._verdict = assess(self)
        return self._verdict

    @property
    def residual(self):
        """``b − prediction`` (NaN where unused), made on first access."""
        if callable(self._residual):
            with compute_threads():   # made after the fit returned: same thread policy
                self._residual = self._residual()
        return self._residual

    def kernel_for(self, tool: str) -> np.ndarray:
        """The kernel as ``tool`` applies it: ``'scipy'`` as fitted, ``'pillow'``, ``'opencv'``
        and ``'torch'`` (which correlate) rotated by 180° (:func:`kernelfit.fit.export.kernel_for`).

        Examples
        --------
        >>> import numpy as np, kernelfit as kf
        >>> a = np.random.default_rng(0).random((32, 32))
        >>> k = np.array([[0, 0, 0], [0, 1, 3], [0, 0, 0]]) / 4
        >>> fit = kf.estimate(a, kf.convolve(a, k, mode="valid"), 3)
        >>> np.round(fit.kernel_for("opencv")[1], 6) + 0.0   # + 0.0: no "-0."
        array([0.75, 0.25, 0.  ])
        """
        from .export import kernel_for

        return kernel_for(self.kernel, tool)

    def as_integer_matrix(self, *, orientation="convolution", max_divisor=None):
        """The kernel as an editor's convolution matrix: integers, divisor and offset
        (:func:`kernelfit.fit.export.integer_matrix`), within two standard errors of the fit
        where they are known; the offset is a fitted constant background (``background=0``).

        ``orientation='correlation'`` gives the matrix as editors (GIMP, Pillow) apply it.
        """
        from .export import MAX_DIVISOR, integer_matrix, kernel_for

        if orientation not in ("convolution", "correlation"):
            raise ValueError(f"orientation={orientation!r}: expected 'convolution' or "
                             "'correlation'")
        tool = "scipy" if orientation == "convolution" else "pillow"
        stderr = self.stderr if isinstance(self.stderr, np.ndarray) else None
        tolerance = None if stderr is None else 2.0 * kernel_for(stderr, tool)
        offset = 0.0
        if self.background is not None and np.size(self.background) == 1:
            offset = float(np.ravel(self.background)[0])
        return integer_matrix(kernel_for(self.kernel, tool), tolerance=tolerance, offset=offset,
                              max_divisor=max_divisor or MAX_DIVISOR)

    def summary(self) -> str:
        """A human-readable report of the fit."""
        lines = [
            f"kernelfit: {self.model} kernel {self.shape[0]}x{self.shape[1]}, "
            f"center {self.center}, boundary '{self.boundary}', method '{self.method}'",
            f"pixels used: {self.n_used}   noise std: {self._noise_text()}   "
            f"kernel sum: {self.kernel.sum():.6g}"
            + ("" if self.lam is None else f"   lam: {self.lam:.4g}"),
        ]
        lines.extend(self._parameter_lines())
        if isinstance(self.stderr, np.ndarray) and np.isfinite(self.stderr).any():
            lines.append(f"median standard error per coefficient: {np.nanmedian(self.stderr):.3g}")
        check = self.info.get("identifiability", {})
        lines.extend(self._identifiability_lines(check))
        lines.extend(self._choice_lines())
        lines.extend(self._clipping_lines())
        lines.append("status: " + self._status(check))
        lines.extend(f"  - {reason}" for reason in self.verdict.reasons)
        if self.message:
            lines.append(self.message)
        if self.kernel.size <= 121:
            lines.append("kernel:")
            lines.append(np.array2string(self.kernel, precision=4, suppress_small=True,
                                         max_line_width=120))
        return "\n".join(lines)

    def _identifiability_lines(self, check) -> list[str]:
        """One line of :mod:`kernelfit.core.diagnostics`' evidence, in numbers (a noise
        level that cannot be estimated leaves only the count of unseen directions)."""
        if "below_noise_fraction" not in check:
            return []
        if check.get("determined", True) is False:
            return [f"identifiability: {self.n_used} used pixels for "
                    f"{check['effective_parameters']:.6g} effective parameters: at least "
                    f"{check['unseen_fraction']:.0%} of the kernel's directions are not seen "
                    "by the data, its error is not bounded"]
        if not np.isfinite(check["below_noise_fraction"]):
            return [f"identifiability: not assessed (no noise level), "
                    f"{check['effective_parameters']:.4g} effective parameters"]
        return [f"identifiability: {check['below_noise_fraction']:.0%} of the frequencies "
                "below the noise, a free least-squares kernel's relative error "
                f"~{check['relative_error']:.2g}, {check['effective_parameters']:.4g} "
                "effective parameters"]

    def _noise_text(self) -> str:
        return f"{self.noise_std:.4g}" if np.isfinite(self.noise_std) else "not estimable"

    def _status(self, check) -> str:
        """The verdict's level; a failed fit also says whether it is not determined at all
        (more unknowns than data) or not trusted (the solver's message says why)."""
        level = self.verdict.level
        if level != "failed":
            return level
        if check.get("determined", True) is False:
            return "failed: NOT DETERMINED (the images cannot determine this kernel)"
        return "failed: NOT TRUSTED"

    def _choice_lines(self) -> list[str]:
        """What was chosen automatically (``shape=None``, ``boundary='auto'``), if anything;
        the evidence is in ``info['shape_scores']`` and ``info['boundary_scores']``."""
        lines = []
        shapes = self.info.get("shape_scores")
        if isinstance(shapes, dict) and "chosen" in shapes:
            offset = self.info.get("kernel_offset")
            moved = "" if offset is None or not np.any(np.abs(offset) >= 0.5) else \
                f"; kernel offset {np.round(offset, 2).tolist()} (rows, columns)"
            lines.append(f"size chosen: {shapes['chosen']} of "
                         f"{len(shapes.get('candidates', []))} candidates{moved}")
        rules = self.info.get("boundary_scores")
        if isinstance(rules, dict) and "chosen" in rules:
            lines.append(f"boundary chosen: '{rules['chosen']}' (border scores in "
                         "info['boundary_scores'], about 1 for the rule that made b)")
        return lines

    def shown_params(self) -> dict:
        """The parameters worth showing: the fitted ones and the widths derived from them
        (``fit.info['free']``, ``fit.info['physical']``), not those held fixed (a centre
        offset that was not fitted is not ``0 ± 0``)."""
        if "free" not in self.info:
            return dict(self.params)
        keep = set(self.info["free"] or ()) | set(self.info.get("physical", ()))
        return {name: value for name, value in self.params.items() if name in keep}

    def _clipping_lines(self) -> list[str]:
        """Images that crowd their dtype's range ends, unhandled (``info['clipping_b']`` ...,
        see :func:`kernelfit.core.defects.clipping_note`)."""
        notes = [self.info] + [n for n in self.info.get("defects", []) if isinstance(n, dict)]
        return [f"clipping: {note[key]}" for note in notes
                for key in ("clipping_b", "clipping_a") if note.get(key)]

    def _parameter_lines(self) -> list[str]:
        """``name = value ± stderr`` for scalar parameters, the shape for array ones."""
        errors = self.stderr if isinstance(self.stderr, dict) else {}
        lines = []
        for name, value in self.shown_params().items():
            if np.ndim(value) == 0:
                error = errors.get(name)
                spread = "" if error is None else f" ± {float(error):.3g}"
                lines.append(f"  {name} = {float(value):.6g}{spread}")
            else:
                lines.append(f"  {name}: array of shape {np.shape(value)}")
        return (["parameters:"] + lines) if lines else []

    def to_dict(self) -> dict:
        """A JSON-safe dict (arrays become nested lists, NaN becomes ``None``).

        Image-sized arrays in ``info`` (more than :data:`MAX_INFO_ARRAY` values, such as the
        used-pixel map) are replaced by a short description.
        """
        return {
            "kernel": _jsonable(self.kernel),
            "shape": list(self.shape),
            "center": list(self.center),
            "boundary": self.boundary,
            "model": self.model,
            "params": _jsonable(self.params),
            "stderr": _jsonable(self.stderr),
            "background": _jsonable(self.background),
            "noise_std": _jsonable(self.noise_std),
            "lam": self.lam,
            "n_used": int(self.n_used),
            "converged": bool(self.converged),
            "verdict": _jsonable(self.verdict.to_dict()),
            "message": self.message,
            "method": self.method,
            "info": _jsonable(_without_images(self.info)),
        }

    def save(self, path) -> None:
        """Write the fit: ``.json`` (``to_dict``) or ``.npz`` (arrays + JSON metadata).

        The file appears whole or not at all (written to a temporary file, then renamed).
        """
        path = Path(path)
        if path.suffix.lower() not in (".json", ".npz"):
            raise ValueError(f"path={str(path)!r}: KernelFit.save writes .json or .npz files")
        with atomic_output(path) as temp_path:
            if path.suffix.lower() == ".json":
                temp_path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
            else:
                stderr = np.full(self.shape, np.nan) if self.stderr is None else self.stderr
                np.savez(temp_path, kernel=self.kernel, stderr=stderr,
                         metadata=json.dumps(self.to_dict()))

    def report(self, path, a=None, b=None, *, title=None, max_pairs=3) -> Path:
        """Write a self-contained HTML report: kernel, MTF, images, residuals, λ curve, errors.

        See :func:`kernelfit.report.write_report`; ``a`` and ``b`` (the fit's images, lists
        for several pairs) are optional: without them the panels that need them are left out.
        Needs matplotlib (``pip install kernelfit[report]``).

        Examples
        --------
        >>> import os, tempfile, numpy as np, kernelfit as kf
        >>> a = np.random.default_rng(0).random((24, 24))
        >>> fit = kf.estimate(a, kf.convolve(a, [[0, 1, 0], [1, 2, 1], [0, 1, 0]]), 3)
        >>> fit.report(os.path.join(tempfile.mkdtemp(), "fit.html"), a=a).suffix
        '.html'
        """
        from ..report.html import write_report

        return write_report(self, path, a, b, title=title, max_pairs=max_pairs)

    def _repr_html_(self) -> str:
        """Notebook view: a kernel thumbnail (when matplotlib is installed) and key numbers."""
        from ..report.html import compact_html

        return compact_html(self)


# Arrays in fit.info up to this many values go into to_dict(); larger ones (image-sized maps:
# the used pixels, robust weights) are described instead: a 4k image's map would be 16 million
# JSON numbers, and the arrays stay available on the fit itself.
MAX_INFO_ARRAY = 4096


def _without_images(value):
    """``value`` with every array of more than :data:`MAX_INFO_ARRAY` values described."""
    if isinstance(value, dict):
        return {k: _without_images(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_images(v) for v in value]
    if isinstance(value, np.ndarray) and value.size > MAX_INFO_ARRAY:
        return {"omitted": f"array of shape {value.shape}, dtype {value.dtype}; on the fit "
                           "object only"}
    return value


def _jsonable(value):
    """Recursively turn numpy values into JSON-safe Python values (NaN/inf -> None)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)


class ResidualImages:
    """``b − prediction`` for every image pair, computed once, when first asked for.

    A fit's residual costs a full-size convolution per pair — on a large image about a third
    of the whole fit — and many callers never look at it: :attr:`KernelFit.residual` calls
    this object on first access.  Until then it keeps references to the prepared pairs.

    Parameters
    ----------
    pairs : list of PreparedPair
    spectra : list of ExtendedSpectrum or None
        One per pair, or None (then the convolution is done afresh).
    kernel : ndarray
    single : bool
        True when the user passed one pair (the residual is then one array, not a list).
    backgrounds : list of kernelfit.background.BackgroundTerms, optional
        One per pair when a background was fitted: it is subtracted too.
    """

    def __init__(self, pairs, spectra, kernel, *, single, backgrounds=None):
        self._inputs = (pairs, spectra or [None] * len(pairs), kernel,
                        backgrounds or [None] * len(pairs))
        self._single = single
        self._images = None

    def __call__(self):
        if self._images is None:
            pairs, spectra, kernel, backgrounds = self._inputs
            self._images = [pair.residual(kernel, spectrum) if terms is None
                            else residual_with_background(pair, terms, kernel, spectrum=spectrum)
                            for pair, spectrum, terms in zip(pairs, spectra, backgrounds)]
            self._inputs = None  # let the inputs go
        return self._images[0] if self._single else self._images

    def sum_of_squares(self) -> float:
        """``Σ residual²`` over the used pixels of every pair."""
        self()
        return float(sum(np.nansum(r * r) for r in self._images))
