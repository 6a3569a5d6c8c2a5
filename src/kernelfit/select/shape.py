"""The kernel size the data call for (``shape=None`` of :func:`kernelfit.estimate`).

Kernel size (:func:`choose_shape`)
    1. *Probe.*  A free kernel is fitted on the 'valid' interior in a generous window
       (:data:`PROBE_SIZE` square, smaller for small images so that there are at least
       :data:`PIXELS_PER_UNKNOWN` pixels per coefficient).  If ``b`` is shifted relative to
       ``a`` by more than a quarter of that window, the window is first moved onto the shift,
       found as the peak of a regularised Fourier ratio of the two images.
    2. *Where the energy lives.*  The probe is a ridge fit whose weight generalised
       cross-validation chooses (negligible on a textured image; on a smooth one it keeps the
       undetermined high frequencies from flooding the window with noise).  ``k̂² − var(k̂)``
       estimates each coefficient's energy ``k²`` without the noise's bias.  Its row and
       column sums give one energy profile per direction, and for each fraction in
       :data:`ENERGY_FRACTIONS` the shortest interval per direction holding that share of
       the energy gives a candidate window (not necessarily square, not necessarily
       centred); the 99 % window grown by 1, 2, ... pixels on every side gives the larger
       candidates.
    3. *Held-out pixels decide.*  The used pixels are split into two halves; a kernel on
       each candidate window is fitted on one half and scored on the other, and the other
       way round.  The score is the held-out mean squared residual over the probe's noise
       variance (about 1 when a window holds the whole kernel; more when it cuts the kernel
       off, or when it has so many coefficients that the fits pick up noise).  Each
       candidate's fit is a sub-block of the probe's sufficient statistics, so scoring needs
       no further pass over the image.  The best candidate is then refined one side at a
       time, preferring the smaller window when the scores differ by less than
       :data:`SCORE_TOLERANCE`.  If the result reaches the edge of the probe window, the
       window grows (to ``2·size + 1``, up to :data:`MAX_SIZE`) and the search repeats.

    The chosen window must contain the output pixel (a kernel's ``center`` is an index into
    it), so a kernel offset from it is covered by a window stretched to include that pixel,
    with ``center`` pointing at it: the window is the candidate box joined with the origin,
    not a larger square.  ``fit.info['kernel_offset']`` is the centroid of the fitted
    kernel's energy relative to ``center`` (rows, columns; positive = ``b`` displaced
    down/right of ``a``).  When ``b`` is 'valid'- or 'full'-sized, its size fixes the shape.

Rule of the layer: a choice with its evidence (:class:`ShapeChoice`), never a fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft
import scipy.linalg
from ..core.conventions import as_image, default_center, make_geometry
from ..core.design import PreparedPair, _single, prepare_pair
from ..solvers.direct import cholesky_rcond
from ..stats.background import profiled_statistics
from ..stats.compute import statistics


# The first probe window, and the largest window searched (the free model's direct-path
# limit).  Most kernels fit in the first; a larger one is probed only when the best candidate
# reaches the probe's edge (the probe's statistics cost O(size⁴)).
PROBE_SIZE = 15


MAX_SIZE = 51


# Pixels per unknown the probe must have: its fits on half the pixels are then still
# well-determined (a photo's Gram matrix is far from the identity).
PIXELS_PER_UNKNOWN = 8


# Shares of the kernel's energy that define the smaller candidate windows.  Beyond 99 % the
# probe's noise decides where the last fraction of a per cent lies (measured on 128² photos:
# the row sums of k̂² − var(k̂) scatter by ~0.05 % of the energy), so larger candidates are
# the 99 % window grown by a margin on every side instead.
ENERGY_FRACTIONS = (0.9, 0.95, 0.98, 0.99)


# Score difference (in noise variances) within which a smaller window is preferred: about
# what one coefficient more or less changes a held-out mean square over a few thousand pixels.
SCORE_TOLERANCE = 2e-3


# A shift of b relative to a beyond this fraction of the probe window moves the window.
SHIFT_FRACTION = 0.25


@dataclass
class ShapeChoice:
    """A chosen kernel window and the evidence for it.

    Attributes
    ----------
    shape : (int, int)
    center : (int, int) or None
        The output pixel's index in the window (None: the shape came from ``b``'s size, where
        the centre plays no part).
    scores : dict
        ``{"candidates": [...], "scores": [...], "chosen": label, ...}`` for
        ``fit.info['shape_scores']``.
    message : str
        Empty, or a caveat (the kernel may be larger than the largest window searched).
    """

    shape: tuple[int, int]
    center: tuple[int, int] | None
    scores: dict = field(default_factory=dict)
    message: str = ""


def choose_shape(a, b, *, mask=None, saturation=None, saturation_a=None,
                 background=None) -> ShapeChoice:
    """Choose a kernel window for ``b ≈ a ⊛ k`` (see the module notes).

    Parameters
    ----------
    a, b : (H, W) array_like, or equal-length lists of them
    mask, saturation, saturation_a, background
        As for :func:`kernelfit.estimate`: the probe uses the same pixels and background.

    Returns
    -------
    ShapeChoice

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> rng = np.random.default_rng(1)
    >>> a = rng.random((64, 64))
    >>> k = np.zeros((7, 7)); k[2:5, 1:6] = 1 / 15          # a 3x5 box
    >>> b = kf.convolve(a, k) + 1e-3 * rng.standard_normal((64, 64))
    >>> choice = choose_shape(a, b)
    >>> choice.shape, choice.center
    ((3, 5), (1, 2))
    """
    a_list, b_list, masks = _pair_lists(a, b, mask)
    fixed = _shape_from_sizes(a_list, b_list)
    if fixed is not None:
        label = f"{fixed[0]}x{fixed[1]}"
        return ShapeChoice(fixed, None, {
            "candidates": [label], "scores": [float("nan")], "chosen": label,
            "message": "fixed by the size of b relative to a"})
    defects = dict(saturation=saturation, saturation_a=saturation_a)
    limit = _probe_size(a_list, cap=MAX_SIZE)
    size = min(PROBE_SIZE, limit)
    shift = _detect_shift(a_list[0], b_list[0], size)
    while True:
        probe = _Probe(a_list, b_list, masks, (size, size), shift, defects, background)
        best, scores = probe.choose()
        touches = probe.touches_edge(best)
        if not touches or size >= limit:
            break
        size = min(limit, 2 * size + 1)  # grow, staying odd
    shape, center = probe.to_kernel_window(best)
    labelled = {}
    for window, score in scores.items():  # windows that differ only outside the kernel
        label = _label(*probe.to_kernel_window(window))
        labelled[label] = min(score, labelled.get(label, np.inf))
    record = {"candidates": list(labelled), "scores": [float(s) for s in labelled.values()],
              "chosen": _label(shape, center),
              "criterion": "held-out mean squared residual / noise variance "
                           "(2-fold, halves of the image)",
              "probe": f"{size}x{size}", "probe_shift": [int(shift[0]), int(shift[1])],
              # In units of b², comparable across backgrounds (the scores are in units of
              # each probe's own noise variance).
              "held_out_mse": float(scores[best] * probe.variance)}
    message = ""
    if touches:
        message = (f"shape=None: the kernel may extend beyond the largest window searched "
                   f"({size}x{size}, limited by the image size and {MAX_SIZE}); pass shape=")
    return ShapeChoice(shape, center, record, message)


def _area(box) -> int:
    return (box[1] - box[0] + 1) * (box[3] - box[2] + 1)


def _label(shape, center) -> str:
    text = f"{shape[0]}x{shape[1]}"
    return text if tuple(center) == default_center(shape) else f"{text}@{center[0]},{center[1]}"


def _pair_lists(a, b, mask):
    """Validated lists of images (and masks) from one pair or lists of pairs."""
    if _single(a) and _single(b):
        return [as_image(a, "a")], [as_image(b, "b")], [mask]
    if _single(a) or _single(b) or len(a) != len(b) or len(a) == 0:
        raise ValueError("a and b must both be images, or lists of the same non-zero length")
    masks = [None] * len(a) if mask is None else mask
    if not isinstance(masks, (list, tuple)) or len(masks) != len(a):
        raise ValueError("with lists of pairs, mask must be None or a list of the same length")
    return ([as_image(x, f"a[{i}]") for i, x in enumerate(a)],
            [as_image(x, f"b[{i}]") for i, x in enumerate(b)], list(masks))


def _shape_from_sizes(a_list, b_list):
    """The kernel shape a 'valid'- or 'full'-sized ``b`` implies; None when ``b`` is like
    ``a``."""
    shapes = set()
    for i, (a, b) in enumerate(zip(a_list, b_list)):
        (H, W), (h, w) = a.shape, b.shape
        if (h, w) == (H, W):
            shapes.add(None)
        elif h <= H and w <= W:
            shapes.add((H - h + 1, W - w + 1))
        elif h >= H and w >= W:
            shapes.add((h - H + 1, w - W + 1))
        else:
            label = "" if len(a_list) == 1 else f"[{i}]"
            raise ValueError(f"b{label} has shape {(h, w)} and a{label} {(H, W)}: with "
                             "shape=None b must be like a, smaller ('valid') or larger "
                             "('full') in both directions")
    if len(shapes) > 1:
        raise ValueError(f"with shape=None every b must imply the same kernel size; these "
                         f"imply {sorted(shapes, key=str)} (None: like a, size to be chosen)")
    return shapes.pop()


def _probe_size(a_list, cap=PROBE_SIZE) -> int:
    """The largest odd window up to ``cap`` that leaves ``PIXELS_PER_UNKNOWN`` valid pixels
    per coefficient."""
    for n in range(cap if cap % 2 else cap - 1, 0, -2):
        pixels = sum(max(0, H - n + 1) * max(0, W - n + 1) for H, W in
                     (x.shape for x in a_list))
        if pixels >= PIXELS_PER_UNKNOWN * n * n and n >= 3:
            return n
    H, W = a_list[0].shape
    raise ValueError(f"shape=None: a is {H}x{W}, too small to choose a kernel size from; "
                     "pass shape=")


def _detect_shift(a, b, size) -> tuple[int, int]:
    """The displacement of ``b`` relative to ``a`` when it exceeds a quarter of the probe
    window, else ``(0, 0)``.

    Found as the peak of the regularised Fourier ratio ``B·conj(A) / (|A|² + ε)`` of the
    Hann-windowed images (a rough kernel estimate whose peak is the blur's location); the
    search is limited to a quarter of the image.
    """
    def prepared(x):
        x = np.where(np.isfinite(x), x, np.nan)
        x = np.nan_to_num(x - np.nanmean(x))
        taper = np.outer(np.hanning(x.shape[0]), np.hanning(x.shape[1]))
        return x * taper

    if a.shape != b.shape:
        return (0, 0)
    fa, fb = scipy.fft.rfft2(prepared(a)), scipy.fft.rfft2(prepared(b))
    power = np.abs(fa) ** 2
    # ε: one per cent of the mean power damps the frequencies a barely contains.
    ratio = scipy.fft.irfft2(fb * np.conj(fa) / (power + 1e-2 * power.mean()), s=a.shape)
    H, W = a.shape
    dy = np.fft.fftfreq(H, 1 / H).astype(int)[:, None]
    dx = np.fft.fftfreq(W, 1 / W).astype(int)[None, :]
    ratio[(np.abs(dy) > H // 4) | (np.abs(dx) > W // 4)] = 0.0
    iy, ix = np.unravel_index(np.argmax(np.abs(ratio)), ratio.shape)
    shift = (int(dy[iy, 0]), int(dx[0, ix]))
    if max(abs(shift[0]), abs(shift[1])) <= SHIFT_FRACTION * size:
        return (0, 0)
    return shift


class _Probe:
    """A free kernel in a generous window, its statistics split into two folds of pixels.

    Window coordinates: row ``y`` of the probe window is the kernel offset
    ``y − c + shift[0]`` from the output pixel (``c`` the window's centre), likewise columns.
    """

    def __init__(self, a_list, b_list, masks, shape, shift, defects, background):
        self.shape, self.shift = shape, shift
        self.center = default_center(shape)
        folds = [None, None]
        for a, b, mask in zip(a_list, b_list, masks):
            a_c, b_c, mask_c = _crop_to_shift(a, b, mask, shift)
            pair = prepare_pair(a_c, b_c, shape, boundary="valid", mask=mask_c, **defects)
            for fold, stats in _half_statistics(pair, shape, background):
                folds[fold] = stats if folds[fold] is None else folds[fold] + stats
        if folds[0] is None or folds[1] is None:
            raise ValueError("shape=None: too few usable pixels to choose a kernel size; "
                             "pass shape=")
        self.folds = folds
        total = folds[0] + folds[1]
        self.kernel, self.energy, self.variance = _probe_fit(total)

    def choose(self):
        """The best window and every window scored: ``(best, {window: score})``.

        Windows are ``(y0, y1, x0, x1)``, inclusive, in probe coordinates.  The best of the
        energy family is refined one side at a time (each side moved in or out by a pixel):
        to a smaller window whose score is within :data:`SCORE_TOLERANCE` (its extra
        coefficients bought nothing), else to one that lowers the score by more than that.
        """
        scores = {}

        def score(box):
            box = self._with_origin(box)
            if box not in scores:
                scores[box] = _held_out_score(self.folds, self._indices(box)) / self.variance
            return box, scores[box]

        best, best_score = min((score(box) for box in self._candidate_boxes()),
                               key=lambda item: item[1])
        for _ in range(sum(self.shape)):
            moves = [score(box) for box in self._neighbours(best)]
            moves = [(box, value) for box, value in moves if box != best]
            # In units of the noise variance; max(·, 1) keeps exact data (scores of rounding
            # size, ~1e-8) from ranking windows by their rounding errors.  Measured from the
            # lowest score seen, so that shrinking steps cannot drift away from it.
            lowest = min(scores.values())
            slack = SCORE_TOLERANCE * max(lowest, 1.0)
            smaller = [(box, value) for box, value in moves if _area(box) < _area(best)
                       and value <= lowest + slack]
            better = [(box, value) for box, value in moves if value < best_score - slack]
            if not (smaller or better):
                break
            best, best_score = min(smaller or better, key=lambda item: item[1])
        return best, scores

    def _neighbours(self, box):
        """``box`` with one side moved in or out by one pixel, inside the window."""
        y0, y1, x0, x1 = box
        kh, kw = self.shape
        moved = [(y0 + 1, y1, x0, x1), (y0, y1 - 1, x0, x1), (y0, y1, x0 + 1, x1),
                 (y0, y1, x0, x1 - 1), (y0 - 1, y1, x0, x1), (y0, y1 + 1, x0, x1),
                 (y0, y1, x0 - 1, x1), (y0, y1, x0, x1 + 1)]
        return [(a, b, c, d) for a, b, c, d in moved
                if 0 <= a <= b < kh and 0 <= c <= d < kw]

    def _candidate_boxes(self):
        """Boxes holding the :data:`ENERGY_FRACTIONS`, then the last grown by 1, 2, ... pixels
        on every side (clipped to the window) until it fills the window."""
        boxes = [_energy_box(self.energy, fraction) for fraction in ENERGY_FRACTIONS]
        y0, y1, x0, x1 = boxes[-1]
        (kh, kw), margin = self.shape, 1
        while boxes[-1] != (0, kh - 1, 0, kw - 1):
            boxes.append((max(0, y0 - margin), min(kh - 1, y1 + margin),
                          max(0, x0 - margin), min(kw - 1, x1 + margin)))
            margin += 1
        return boxes

    def _with_origin(self, box):
        """The box stretched to contain the output pixel, when it lies in the probe window."""
        y0, y1, x0, x1 = box
        oy, ox = self.center[0] - self.shift[0], self.center[1] - self.shift[1]
        if 0 <= oy < self.shape[0] and 0 <= ox < self.shape[1]:
            return (min(y0, oy), max(y1, oy), min(x0, ox), max(x1, ox))
        return box

    def _indices(self, box):
        y0, y1, x0, x1 = box
        rows, cols = np.arange(y0, y1 + 1), np.arange(x0, x1 + 1)
        return (rows[:, None] * self.shape[1] + cols[None, :]).ravel()

    def touches_edge(self, box) -> bool:
        y0, y1, x0, x1 = box
        return y0 == 0 or x0 == 0 or y1 == self.shape[0] - 1 or x1 == self.shape[1] - 1

    def to_kernel_window(self, box):
        """``(shape, center)`` of the kernel window covering ``box`` and the output pixel."""
        y0, y1, x0, x1 = box
        t0y, t1y = y0 - self.center[0] + self.shift[0], y1 - self.center[0] + self.shift[0]
        t0x, t1x = x0 - self.center[1] + self.shift[1], x1 - self.center[1] + self.shift[1]
        t0y, t1y, t0x, t1x = min(t0y, 0), max(t1y, 0), min(t0x, 0), max(t1x, 0)
        return (t1y - t0y + 1, t1x - t0x + 1), (-t0y, -t0x)


def _crop_to_shift(a, b, mask, shift):
    """``a`` and ``b`` cropped to their overlap when ``b`` is displaced by ``shift``, so that
    a window centred on the shift sees the kernel (``k_crop[m] = k[m + shift]``)."""
    if shift == (0, 0):
        return a, b, mask
    b_slices, a_slices = [], []
    for d, n in zip(shift, a.shape):
        b_slices.append(slice(max(0, d), n + min(0, d)))
        a_slices.append(slice(max(0, -d), n + min(0, -d)))
    b_slices, a_slices = tuple(b_slices), tuple(a_slices)
    cropped_mask = None if mask is None else np.asarray(mask)[b_slices]
    return a[a_slices], b[b_slices], cropped_mask


def _half_statistics(pair: PreparedPair, shape, background):
    """``(fold, statistics)`` of the two halves of the used pixels (split across the longer
    side).  With a background, each half has its own, profiled out."""
    kh, kw = shape
    Ho, Wo = pair.b_used.shape
    n_background = 0 if background is None else (background + 1) * (background + 2) // 2
    for fold in (0, 1):
        if Ho >= Wo:
            rows = slice(0, Ho // 2) if fold == 0 else slice(Ho // 2, Ho)
            cols = slice(0, Wo)
        else:
            rows, cols = slice(0, Ho), slice(0, Wo // 2) if fold == 0 else slice(Wo // 2, Wo)
        P = pair.extended[rows.start:rows.stop + kh - 1, cols.start:cols.stop + kw - 1]
        b_half = pair.b_used[rows, cols]
        use = None if pair.use is None else pair.use[rows, cols]
        if (b_half.size if use is None else int(use.sum())) <= n_background:
            continue
        if background is None:
            stats = statistics(P, b_half, shape,
                               weights=None if use is None else use.astype(np.float64))
        else:
            geometry = make_geometry(P.shape, shape, boundary="valid", output_size="valid")
            half = PreparedPair(geometry, P, b_half, use, b_half.shape)
            stats = profiled_statistics([half], shape, background)[0]
        yield fold, stats


def _probe_fit(stats):
    """The probe's kernel, its energy estimate ``k̂² − var(k̂)`` and the noise variance.

    A ridge fit with the weight chosen by generalised cross-validation, from one
    eigendecomposition of the Gram matrix: on a textured image GCV picks a negligible weight
    (the least-squares kernel), while on a smooth one it suppresses the directions the image
    does not determine (a photo with little fine detail leaves the kernel's high frequencies
    to the noise), whose noise would otherwise swamp the energy profiles.
    """
    G, c, n = stats.gram, stats.rhs, max(stats.n_used, 1)
    values, vectors = scipy.linalg.eigh(G)
    values = np.maximum(values, 0.0)
    top = max(values[-1], np.finfo(float).tiny)
    projected = vectors.T @ c
    best = None
    for lam in top * np.logspace(-14, 0, 57):
        shrink = values / (values + lam)
        # RSS = bᵀb − 2kᵀc + kᵀGk with k = V diag(1/(w+λ)) Vᵀc.
        rss = max(stats.btb - np.sum(projected ** 2 * (2.0 - shrink) / (values + lam)), 0.0)
        dof = float(shrink.sum())
        gcv = n * rss / max(n - dof, 1.0) ** 2
        if best is None or gcv < best[0]:
            best = (gcv, lam, rss, dof)
    _, lam, rss, dof = best
    k = vectors @ (projected / (values + lam))
    mean_square = stats.btb / n
    # Floor: held-out residuals come from kᵀGk − 2kᵀc + bᵀb, which loses all digits below
    # ~1e-15 of bᵀb; a floor of 1e-10 of b's mean square (noise of 1e-5 of b's scale, far
    # below 8-bit rounding) keeps exact data's scores at ~0 instead of at rounding noise.
    variance = max(rss / max(n - dof, 1.0), 1e-10 * mean_square, np.finfo(float).tiny)
    # cov(k̂) = σ² V diag(w/(w+λ)²) Vᵀ.
    coefficient_variance = variance * (np.square(vectors) @ (values / (values + lam) ** 2))
    energy = (np.square(k) - coefficient_variance).reshape(stats.shape)
    return k.reshape(stats.shape), energy, variance


def _energy_box(energy, fraction):
    """The window ``(y0, y1, x0, x1)`` of shortest rows and columns intervals each holding
    ``1 − (1 − fraction)/2`` of the energy profile in its direction (so the box holds at
    least ``fraction`` of the energy)."""
    share = 1.0 - (1.0 - fraction) / 2.0
    y0, y1 = _shortest_interval(energy.sum(axis=1), share)
    x0, x1 = _shortest_interval(energy.sum(axis=0), share)
    return (y0, y1, x0, x1)


def _shortest_interval(profile, share):
    """Shortest ``[i, j]`` whose sum is at least ``share`` of the profile's total (the
    profile may have small negative entries: it is an unbiased energy estimate)."""
    cumulative = np.concatenate([[0.0], np.cumsum(profile)])
    total = cumulative[-1]
    n = len(profile)
    if not total > 0:
        return 0, n - 1
    sums = cumulative[None, :] - cumulative[:, None]            # sums[i, j+1] = Σ_{i..j}
    lengths = np.arange(n + 1)[None, :] - np.arange(n + 1)[:, None]
    ok = (sums >= share * total) & (lengths > 0)
    if not ok.any():
        return 0, n - 1
    length = lengths[ok].min()
    # Among the shortest, the one holding the most energy.
    candidates = np.argwhere(ok & (lengths == length))
    i, j = max(candidates, key=lambda ij: sums[ij[0], ij[1]])
    return int(i), int(j) - 1


def _held_out_score(folds, indices):
    """Mean squared residual on each fold of the kernel fitted on the other, both ways."""
    total, n = 0.0, 0
    for fit_on, test_on in ((folds[0], folds[1]), (folds[1], folds[0])):
        k = _solve(fit_on.gram[np.ix_(indices, indices)], fit_on.rhs[indices])
        G, c = test_on.gram[np.ix_(indices, indices)], test_on.rhs[indices]
        total += float(k @ G @ k - 2.0 * k @ c + test_on.btb)
        n += test_on.n_used
    return total / max(n, 1)


def _solve(G, c):
    """``G⁻¹c`` by Cholesky, or by least squares when ``G`` is singular.

    Singular means not positive definite or a reciprocal condition below machine epsilon
    (where ``scipy.linalg.solve`` would warn); the condition is read, not caught as a
    warning, so the process-wide warning filters are never touched.
    """
    factor, rcond = cholesky_rcond(G)
    if factor is not None and rcond >= np.finfo(float).eps:
        return scipy.linalg.cho_solve((factor, False), c)
    return scipy.linalg.lstsq(G, c, cond=1e-12)[0]
