"""``kf.estimate``: the front door.

It routes inputs that need a wrapper (Dask arrays, colour channels, a varying kernel, an
automatic size or edge rule) to that wrapper, which refits through this function; otherwise
it checks every option once (:func:`kernelfit.front.options.check_request`), chooses the fit
(:func:`kernelfit.front.dispatch.choose_fit`), prepares the pairs and fits.
"""

from __future__ import annotations

from functools import partial

from ..core.conventions import masked_as_nan
from ..core.design import _prepare_pairs, _single
from ..core.inputs import has_dask_input
from ..core.scaling import choose_scale
from ..fit.rescale import in_user_units
from ..fit.result import KernelFit
from ..solvers.regularisers import NONSMOOTH
from .auto import estimate_auto, is_auto
from .channels import estimate_channels
from .dispatch import choose_fit
from .distributed import estimate as estimate_dask
from .options import check_request
from .variation import estimate_varying
from ..core.threads import uses_threads


@uses_threads
def estimate(a, b, shape, *, boundary="valid", center=None, model="free", loss="l2",
             reg=None, lam="auto", nonneg=False, normalize=None, mask=None, method=None,
             noise_std=None, background=None, saturation=None, saturation_a=None,
             channel_axis=None, shared_channels=False, variation=None,
             **model_options) -> KernelFit:
    """Estimate the kernel ``k`` with ``b ≈ a ⊛ k`` by least squares.

    Parameters
    ----------
    a, b : (H, W) array_like, or equal-length lists of them
        The original and the observed image.  ``b`` may have ``a``'s shape, the 'valid' shape
        ``a.shape − shape + 1`` or the 'full' shape ``a.shape + shape − 1``.  Lists fit one
        kernel shared by every pair.  NaN/inf in ``b`` drop that pixel; in ``a`` they drop
        every pixel of ``b`` whose footprint touches them.  The masked pixels of a
        ``numpy.ma.MaskedArray`` count as NaN.  Dask arrays are fitted chunk by
        chunk on the current Dask scheduler or ``client=``
        (:func:`kernelfit.distributed.estimate`); images on disk larger than memory go
        through :func:`kernelfit.tiles.estimate_tiled`.
    shape : int or (kh, kw) or None
        Kernel size in pixels, odd or even.  ``None``: chosen from the data
        (:func:`kernelfit.select.shape.choose_shape`: a generous free probe on the 'valid' interior,
        candidate windows holding given shares of its energy, judged on held-out pixels);
        the window need not be square or centred, ``fit.center`` says where the output pixel
        is, and ``fit.info['shape_scores']`` and ``['kernel_offset']`` hold the evidence and
        the kernel's displacement.  ``center`` cannot be given with ``shape=None``.
    boundary : str, default 'valid'
        How ``b`` was made at the edges.  ``'valid'`` uses only pixels whose footprint lies
        inside ``a`` (right whatever made ``b``); ``'fill'`` (zeros), ``'wrap'``,
        ``'reflect'`` (= scipy.signal's 'symm'), ``'nearest'`` (edge replication) and
        ``'mirror'`` use every pixel under that assumption.  ``'auto'``: fit the 'valid'
        interior, score each rule by how well that kernel predicts the border of ``b``, and
        refit under the best (:func:`kernelfit.auto.choose_boundary`); when none explains the
        border (a cropped ``b``) the 'valid' fit is kept and ``fit.message`` says so.
        ``fit.boundary`` is the rule used, ``fit.info['boundary_scores']`` the scores.
    center : (int, int), optional
        Kernel index landing on the output pixel; default ``((kh-1)//2, (kw-1)//2)`` as in
        scipy.signal.  Users of scipy.ndimage with an even kernel pass ``(kh//2, kw//2)``.
    model : {'free', 'radial', 'powerlaw', 'separable', 'lowrank'}
        ``'free'``: one coefficient per pixel.  ``'radial'``: ``k = f(r)``, ``f``
        piecewise-linear on knots (``radial_bins=`` radii in pixels; ``smooth=`` penalises
        its second differences).  ``'powerlaw'``: ``amplitude·r^(−exponent)`` with a free
        centre value (``exponent_bounds=``).  ``'separable'``: ``u vᵀ``.  ``'lowrank'``:
        ``U Vᵀ`` of rank ``rank=``.  Radial and power-law fits handle kernels larger than
        the image (seed 000's 199×199 from 100×100); ``fit.params`` holds the profile,
        parameters or factors and ``fit.stderr`` their standard errors.
        Parametric families: ``'gaussian'`` (``sigma``; sampled and normalised as
        ``scipy.ndimage.gaussian_filter``, ``truncate=``, ``sampling='integrated'``),
        ``'elliptical'`` (``sigma_x, sigma_y, theta``), ``'moffat'`` (``alpha, beta``),
        ``'disk'`` (``radius``), ``'motion'`` (``length, angle``), ``'box'`` (``width,
        height``), or a :class:`kernelfit.models.parametric.KernelModel` object; each with an
        amplitude (the kernel sum, fixed by ``normalize=``) and, with ``fit_offset=True``, a
        sub-pixel centre offset.  Angles in degrees.
    loss : {'l2', 'l1', 'huber'}
        Least squares; the exact least-absolute-deviations minimiser (``'l1'``, seed 002's
        ``Σ|g⊛A − B|``) and Huber (``f_scale=``, units of b; default 1.345 robust standard
        deviations of the residuals) for the free model and the parametric models.  With the
        free model, ``clip=3.0`` (and ``loss='l2'``) sigma-clips instead; the robust free fits
        report the weights they gave each pixel in ``fit.info['weights']`` (see
        :mod:`kernelfit.robust`).
    reg : {None, 'ridge', 'gradient', 'laplacian', 'tv', 'l1'}
        Adds ``lam·R(k)`` to the mean squared residual: ``R = ‖Lk‖²`` with ``L`` the identity
        (``'ridge'``), the kernel's finite differences (``'gradient'``) or its Laplacian
        (``'laplacian'``); the total variation ``Σ|∇k|`` (``'tv'``) or ``Σ|k|`` (``'l1'``),
        solved matrix-free by FISTA; see :mod:`kernelfit.regularisers`.
    lam : float or 'auto', default 'auto'
        Regularisation weight per pixel: the objective is ``‖Xk − b‖²/n + lam·R(k)``, so one
        value means the same on images of any size.  ``'auto'`` chooses it by generalised
        cross-validation (exact on the direct path, with a randomized trace estimate
        matrix-free), or by the discrepancy principle when ``noise_std`` is given; ``'tv'``
        and ``'l1'`` always use the discrepancy principle, estimating the noise level by a
        GCV-chosen ``'gradient'`` fit when it is not given (several proximal solves: give
        ``lam`` for speed).  The curve searched is in ``fit.info['lambda_selection']``.
    nonneg : bool, default False
        Constrain every kernel coefficient to be ``>= 0`` (exactly: an active-set method on
        the direct path, projection in FISTA matrix-free).
    normalize : float, optional
        Constrain the kernel to sum to this value (e.g. 1.0 for a flux-preserving blur).
    mask : bool array like ``b`` (or list of them), optional
        True where a pixel of ``b`` may be used.  The pixels finally used (after NaN,
        saturation and the mask) are mapped in ``fit.info['used']``.  Integer ``b`` carries
        its rounding variance 1/12 (``fit.info['quantisation_var']``): the discrepancy
        principle aims at ``noise_std² + 1/12`` and ``fit.noise_std`` is never below it.
    method : {None, 'normal', 'iterative', 'lp', 'fourier', 'wiener', 'richardson-lucy'}
        Solver of the free model.  ``'normal'``: the sufficient statistics and a ``p × p``
        Gram matrix (exact GCV and standard errors).  ``'iterative'``: matrix-free FFT
        operator with conjugate gradients or FISTA (any kernel size; ``tol=``, ``maxiter=``;
        convergence in ``fit.converged``, ``fit.message``, ``fit.info['iterations']`` and
        ``['history']``; no standard errors).  ``None``: ``'normal'`` up to
        ``kernelfit.free.MAX_DIRECT_UNKNOWNS`` (51×51) coefficients and without
        ``'tv'``/``'l1'``, otherwise ``'iterative'``.  Without a regulariser the matrix-free
        path stops at ``tol`` (default 1e-5), which regularises like early stopping; pass
        ``tol=1e-10`` for the least-squares kernel itself.
        ``'lp'``: the exact L1 kernel as one linear program (HiGHS; with ``loss='l1'``, for
        small problems).  ``'fourier'`` (``B̂/Â`` with padding, edge treatment and support
        extraction), ``'wiener'`` (regularised ratio, ``eps`` by GCV) and
        ``'richardson-lucy'`` (multiplicative updates, a statistical stopping rule): the
        classic answers, for comparison (:mod:`kernelfit.classic`); least squares is more
        accurate on every case measured.
    noise_std : float, optional
        Known noise standard deviation of ``b`` (units of ``b``); with ``lam='auto'`` it selects
        the discrepancy principle.
    saturation : float, (floor, ceiling) or 'auto', optional
        Pixels of ``b`` at or above this level are clipped (a sensor's full well, 255 of an
        8-bit file) and are not used; a pair also drops those at or below the floor (0 of
        an 8-bit file; either level may be None); ``'auto'`` detects a ceiling and a floor
        (a plateau of many pixels at the maximum or minimum) and reports them in
        ``fit.info['saturation_b']`` and ``['saturation_b_floor']``.  Only the clipped
        pixels themselves are dropped: clipping happens after the blur.  Without it, an
        integer ``b`` with many pixels at its dtype's range ends gets a note in
        ``fit.info['clipping_b']`` and in ``fit.summary()``.
    saturation_a : float, (floor, ceiling) or 'auto', optional
        The same for ``a``: every pixel of ``b`` whose footprint touches a clipped pixel of
        ``a`` is dropped (like NaN in ``a``).
    background : int, optional
        Fit a polynomial background of this degree (0: a constant offset, 1: a plane, ...)
        per image pair jointly with the kernel: ``b ≈ a ⊛ k + Σ β_t T_t``, ``T_t`` Legendre
        products on coordinates scaled to [−1, 1] over the used pixels.  It is minimised out
        of the statistics exactly (:mod:`kernelfit.stats.background`); the parametric
        models with ``loss='l1'`` or ``'huber'`` fit ``β`` jointly with their parameters on
        the pixels' residuals instead, so the background is as robust to outliers as the
        kernel.  ``fit.background`` holds ``β`` (a list for several pairs),
        ``fit.info['background']`` the same as monomials, and ``fit.residual`` has it
        subtracted.  Available for the free model on both paths (matrix-free: the
        operator's range is projected off the background, so ``'tv'``, ``'l1'``, ``nonneg``
        and kernels above 51×51 take it too; on the direct path also with ``clip=``,
        ``loss='huber'`` and ``variation=``), the structured models up to 64×64 and the
        parametric models with every loss.
    channel_axis : int, optional
        ``a`` and ``b`` carry channels on this axis (e.g. ``-1`` for ``(H, W, 3)`` colour
        images; ``a`` may also be one 2-D image for every channel): one kernel per channel,
        returned as a :class:`kernelfit.channels.ChannelFits` whose ``kernel`` has the
        channels on the same axis; ``mask`` is 2-D (all channels) or shaped like ``b``.
    shared_channels : bool, default False
        With ``channel_axis``: fit one kernel for all channels (the channels become pairs of
        one fit, a :class:`KernelFit`).
    variation : int, optional
        Let every kernel coefficient vary over the image as a polynomial of this total degree
        in the pixel position of ``b`` (``b(i) = Σ_t m_t(i)·(a ⊛ k_t)(i)``, see
        :mod:`kernelfit.variation`): a :class:`kernelfit.variation.VaryingKernelFit` whose
        ``kernel`` is the kernel at the centre of ``b``, ``kernel_at(y, x)`` the kernel at
        pixel ``(y, x)`` of ``b`` and ``params['variation']`` the ``(T, kh, kw)``
        coefficients.  Free model, ``loss='l2'``, direct solver only; every ``b`` of a list
        must have one shape.  ``background=`` is fitted with it (as the astronomers' image
        subtraction does); ``reg='ridge'|'gradient'|'laplacian'`` penalises every term with
        one ``lam`` (``‖Xk − b‖²/n + lam·Σ_t R(k_t)``, ``'auto'`` as above);
        ``normalize=s`` makes the kernel sum ``s`` at every position; ``nonneg=True`` holds
        the kernel ``>= 0`` exactly at an ``n × n`` grid of positions of ``b``
        (``nonneg_grid=n``, default 3: corners, edge midpoints, centre), which for
        ``variation <= 1`` means everywhere on ``b``; see
        :func:`kernelfit.front.variation.estimate_varying`.
    **model_options
        Options of the structured and parametric models (see ``model``); ``tol``,
        ``maxiter`` of the free model's matrix-free path and robust fits; ``f_scale``,
        ``clip`` of its robust fits; the classic methods' options (see
        :data:`kernelfit.classic.OPTIONS`).

    Returns
    -------
    KernelFit
        (:class:`kernelfit.channels.ChannelFits` for one kernel per channel,
        :class:`kernelfit.variation.VaryingKernelFit` with ``variation=``.)

    Raises
    ------
    ValueError, TypeError
        For inputs that cannot describe a convolution; the message names the parameter.

    Warns
    -----
    kernelfit.IdentifiabilityWarning
        When an unregularised free kernel is mostly noise: many of its frequencies are
        below the noise in ``a``, or the Gram matrix is too ill-conditioned for the noise
        (numbers in ``fit.info['identifiability']``, advice in the message).
    kernelfit.RankDeficientWarning
        (A subclass of the above.)  When the images do not determine the kernel at all
        (then ``fit.converged`` is False).

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((64, 64))
    >>> k = np.array([[0.0, 0.1, 0.0], [0.2, 0.5, 0.1], [0.0, 0.1, 0.0]])
    >>> fit = kf.estimate(a, kf.convolve(a, k), (3, 3), boundary="fill")
    >>> np.allclose(fit.kernel, k)
    True
    """
    # A masked pixel is a NaN one on every path (the channel stacks and the lists too).
    a, b = masked_as_nan(a), masked_as_nan(b)
    options = dict(boundary=boundary, center=center, model=model, loss=loss, reg=reg, lam=lam,
                   nonneg=nonneg, normalize=normalize, mask=mask, method=method,
                   noise_std=noise_std, background=background, saturation=saturation,
                   saturation_a=saturation_a)
    wrapper = _wrapper(a, b, shape, options, model_options, channel_axis=channel_axis,
                       shared_channels=shared_channels, variation=variation)
    if wrapper is not None:
        return wrapper()
    problem = check_request(shape, single=_single(a), model_options=model_options, **options)
    fit = choose_fit(problem)
    pairs = _prepare_pairs(a, b, problem.shape, **problem.preparation)
    # Images far from magnitude 1 are fitted in exactly rescaled units (kernelfit.core.scaling).
    free = isinstance(problem.model, str) and problem.model == "free"
    scale = choose_scale(pairs, kernel_units=free)
    if scale.identity:
        result = fit(pairs)
    else:
        degree = 1 if problem.reg in NONSMOOTH else 2   # how the penalty scales with k
        fit = choose_fit(scale.problem(problem, lam_degree=degree))(scale.apply(pairs))
        result = in_user_units(fit, scale, kernel_units=free, lam_degree=degree)
    if noise_std is not None:   # the noise model the verdict's χ² is measured against
        result.info["noise_std_given"] = float(noise_std)
    return result


def _wrapper(a, b, shape, options, model_options, *, channel_axis, shared_channels,
             variation):
    """The front door that refits for these inputs (Dask arrays, channels, a varying kernel,
    automatic size or edge rule), as a call without arguments; None for a plain fit."""
    everything = dict(options, **model_options)
    if has_dask_input(a, b, options["mask"]):  # statistics per chunk on the Dask cluster
        return partial(estimate_dask, a, b, shape, channel_axis=channel_axis,
                       shared_channels=shared_channels, variation=variation, **everything)
    if channel_axis is not None or shared_channels is not False:
        return partial(estimate_channels, a, b, shape, channel_axis=channel_axis,
                       shared_channels=shared_channels, variation=variation, refit=estimate,
                       **everything)
    if variation is not None:
        return partial(estimate_varying, a, b, shape, variation=variation, **everything)
    if shape is None or is_auto(options["boundary"]):
        return partial(estimate_auto, a, b, shape, refit=estimate, **everything)
    return None
