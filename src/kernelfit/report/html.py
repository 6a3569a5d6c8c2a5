"""A self-contained HTML report of a fit: figures, parameters, diagnostics.

:func:`write_report` (``fit.report(path, a=a, b=b)``, ``kernelfit estimate ... --report``)
writes **one** HTML file with no external resources: figures are PNGs drawn with matplotlib's
Agg renderer and embedded as ``data:`` URIs, text is escaped, the style sheet is inline.  It
shows

- the kernel as an image with a colour bar, in convolution orientation, with its centre
  marked (and the standard error of each coefficient when known), its radial profile and its
  MTF (``|FFT|`` of the kernel, radially averaged and normalised by ``|k̂(0)|``);
- for each image pair (up to ``max_pairs``): ``a``, ``b``, the prediction
  ``kf.convolve(a, fit.kernel, boundary=fit.boundary, center=fit.center)`` in ``b``'s frame
  (``b − residual`` when a background was fitted, so that it includes the background), the
  residual map and its histogram against ``N(0, noise_std²)``;
- the evidence of automatic choices: the λ curve of ``fit.info['lambda_selection']`` (λ,
  score, chosen λ) and any other ``fit.info['*_selection']`` scores;
- the parameters with ± standard errors (free kernels: summary numbers such as the sum,
  centroid, width and MTF50), the diagnostics (``n_used``, ``noise_std``, ``converged``,
  ``message``, ``method``, every scalar in ``fit.info``) and ``fit.summary()``.

Panels that need ``a`` or ``b`` are left out when they are not given: the kernel, residual,
parameter and diagnostic sections need only the fit.

Checking the page in a browser: an inline script sets attributes on ``<html>`` once the page
has loaded — ``data-figures="loaded/total"``, ``data-figures-loaded="true"`` when every
``<img>`` is ``complete`` with ``naturalWidth > 0``, and ``data-errors="N"``, the number of
script or resource errors seen.  ``chromium --headless --dump-dom file://...`` prints the DOM
after the load event, so a test reads them there (``tests/test_report.py``).  The report
itself writes nothing to the browser console.

Needs matplotlib (``pip install kernelfit[report]``).
"""

from __future__ import annotations

import base64
import html
import importlib.metadata
import io as _bytes_io
import math
from pathlib import Path

import numpy as np

from ..core.conventions import as_image, make_geometry, output_size_of
from ..core.forward import convolve_extended
from ..io.atomic import atomic_output, check_writable

__all__ = ["write_report", "render_report", "render_channel_report", "compact_html",
           "check_report_path"]

REPORT_EXTENSIONS = (".html", ".htm")

# Images larger than this (per side) are strided down for display: a figure a few hundred
# pixels wide cannot show more, and drawing a 8k² image would dominate the report's cost.
_DISPLAY_MAX = 1024
# The page shows at most this many numbers for an array-valued parameter.
_MAX_ARRAY_VALUES = 16

_MATPLOTLIB_HINT = "the HTML report needs matplotlib: pip install kernelfit[report]"


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def check_report_path(path) -> Path:
    """Fail early, before any work, if ``path`` cannot receive an HTML report.

    Parameters
    ----------
    path : str or os.PathLike
        Must end in ``.html`` or ``.htm``, in an existing writable directory.

    Raises
    ------
    ValueError
        Another extension, a missing or read-only directory, or a path that is a directory.

    Examples
    --------
    >>> check_report_path("report.html").name
    'report.html'
    >>> check_report_path("report.png")
    Traceback (most recent call last):
    ...
    ValueError: report.png: a report is written as HTML; use a path ending in .html or .htm
    """
    path = Path(path)
    if path.suffix.lower() not in REPORT_EXTENSIONS:
        raise ValueError(
            f"{path}: a report is written as HTML; use a path ending in .html or .htm")
    return check_writable(path)


def require_matplotlib() -> None:
    """Raise ``ImportError`` with the install hint when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(_MATPLOTLIB_HINT) from exc


def write_report(fit, path, a=None, b=None, *, title=None, max_pairs=3) -> Path:
    """Write the HTML report of ``fit`` to ``path`` (whole or not at all).

    Parameters
    ----------
    fit : KernelFit or ChannelFits
        A :class:`kernelfit.channels.ChannelFits` gets one page with every channel's report.
    path : str or os.PathLike
        Destination, ending in ``.html`` or ``.htm``.  Checked before anything is drawn; the
        file is written to a temporary file beside it and renamed when complete.
    a, b : array_like or list of array_like, optional
        The images the fit was made from (lists for a multi-pair fit).  Without ``a`` the
        images and prediction panels are left out; without ``b`` the ``b`` panel.  ``b`` must
        have the shape of ``fit.residual``.
    title : str, optional
        Page title; default ``"kernelfit report: <model> kernel <kh>x<kw>"``.
    max_pairs : int, default 3
        Image panels are drawn for at most this many pairs (the page says how many exist).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        A bad ``path`` (nothing is written), or ``a``/``b`` that do not match the fit.
    ImportError
        matplotlib is not installed.

    Examples
    --------
    >>> import os, tempfile, numpy as np, kernelfit as kf
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((32, 32))
    >>> b = kf.convolve(a, np.full((3, 3), 1 / 9), boundary="nearest")
    >>> fit = kf.estimate(a, b, 3, boundary="nearest")
    >>> path = fit.report(os.path.join(tempfile.mkdtemp(), "report.html"), a=a, b=b)
    >>> path.read_text(encoding="utf-8").count("data:image/png;base64,") >= 4
    True
    """
    path = check_report_path(path)
    if hasattr(fit, "fits") and hasattr(fit, "channel_axis"):     # a ChannelFits
        text = render_channel_report(fit, a, b, title=title, max_pairs=max_pairs)
    else:
        text = render_report(fit, a, b, title=title, max_pairs=max_pairs)
    with atomic_output(path) as temp_path:
        temp_path.write_text(text, encoding="utf-8")
    return path


def render_report(fit, a=None, b=None, *, title=None, max_pairs=3) -> str:
    """The report of :func:`write_report` as an HTML string."""
    require_matplotlib()
    if not isinstance(max_pairs, (int, np.integer)) or max_pairs < 0:
        raise ValueError(f"max_pairs={max_pairs!r} must be an integer >= 0")
    if title is None:
        title = f"kernelfit report: {fit.model} kernel {fit.shape[0]}x{fit.shape[1]}"
    sections = _sections(fit, a, b, max_pairs)
    nav = "".join(f'<a href="#{anchor}">{html.escape(name)}</a>'
                  for anchor, name in _SECTION_NAMES if f'id="{anchor}"' in "".join(sections))
    return _page(title, _subtitle(fit), nav, _status_banner(fit), "\n".join(sections))


def render_channel_report(fits, a=None, b=None, *, title=None, max_pairs=3) -> str:
    """One page for a :class:`kernelfit.channels.ChannelFits`: every channel's report, one
    after the other (``a`` and ``b`` with their channels on ``fits.channel_axis``; a 2-D
    ``a`` serves every channel)."""
    require_matplotlib()
    first = fits.fits[0]
    if title is None:
        title = (f"kernelfit report: {len(fits.fits)} channels, {first.model} kernels "
                 f"{first.shape[0]}x{first.shape[1]}")
    a_planes = _channel_planes(a, fits, "a")
    b_planes = _channel_planes(b, fits, "b")
    parts, nav = [], []
    for c, fit in enumerate(fits.fits):
        body = "\n".join(_sections(fit, a_planes[c], b_planes[c], max_pairs))
        # Every channel has the same sections: prefix their ids to keep them unique.
        body = body.replace('id="', f'id="channel{c}-')
        parts.append(f'<section id="channel{c}"><h2>Channel {c}</h2>\n'
                     f'{_status_banner(fit)}\n{body}\n</section>')
        nav.append(f'<a href="#channel{c}">Channel {c}</a>')
    return _page(title, _subtitle(first), "".join(nav), "", "\n".join(parts))


def _channel_planes(images, fits, name) -> list:
    """The per-channel planes of ``a`` or ``b`` (``None`` for each when not given)."""
    n = len(fits.fits)
    if images is None:
        return [None] * n
    array = np.asarray(images)
    if name == "a" and array.ndim == 2:
        return [array] * n
    if array.ndim != 3 or array.shape[fits.channel_axis] != n:
        raise ValueError(f"{name} has shape {array.shape}; the report of {n} channels needs "
                         f"them on axis {fits.channel_axis}")
    return list(np.moveaxis(array, fits.channel_axis, 0))


def _sections(fit, a, b, max_pairs) -> list[str]:
    """The report's sections for one fit (empty ones left out)."""
    kernel = _kernel_of(fit)
    pairs = _pairs(fit, a, b)
    sections = [_kernel_section(fit, kernel), _parameters_section(fit, kernel),
                _images_section(fit, pairs, max_pairs), _selection_section(fit),
                _diagnostics_section(fit),
                _section("summary", "Summary", f"<pre>{html.escape(fit.summary())}</pre>")]
    return [s for s in sections if s]


def _subtitle(fit) -> str:
    return (f"{fit.model} kernel {fit.shape[0]}×{fit.shape[1]}, centre {tuple(fit.center)}, "
            f"boundary '{fit.boundary}', method '{fit.method}'")


def _page(title, subtitle, nav, status, body) -> str:
    return _PAGE.format(title=html.escape(str(title)), style=_STYLE, script=_SCRIPT,
                        status=status, subtitle=html.escape(subtitle), nav=nav, body=body,
                        version=html.escape(_version()))


def compact_html(fit) -> str:
    """A notebook-sized view: a kernel thumbnail beside the key numbers (``_repr_html_``).

    Without matplotlib the thumbnail is left out.
    """
    rows = [("model", fit.model), ("shape", f"{fit.shape[0]}×{fit.shape[1]}"),
            ("center", tuple(fit.center)), ("boundary", fit.boundary), ("method", fit.method),
            ("pixels used", fit.n_used), ("noise std", _fmt(fit.noise_std)),
            ("kernel sum", _fmt(float(np.sum(fit.kernel))))]
    if fit.lam is not None:
        rows.append(("λ", _fmt(fit.lam)))
    errors = fit.stderr if isinstance(fit.stderr, dict) else {}
    for name, value in fit.params.items():
        if np.ndim(value) == 0:
            rows.append((name, _with_error(value, errors.get(name))))
    rows.append(("status", "ok" if fit.converged else "NOT TRUSTED"))
    if fit.message:
        rows.append(("message", fit.message))
    table = "".join(
        f'<tr><th style="text-align:left;padding:1px 8px 1px 0">{html.escape(str(k))}</th>'
        f'<td style="text-align:left">{html.escape(str(v))}</td></tr>' for k, v in rows)
    thumbnail = ""
    try:
        require_matplotlib()
    except ImportError:
        pass
    else:
        kernel = _kernel_of(fit)
        fig = _figure(2.6, 2.3)
        ax = fig.add_subplot()
        _draw_kernel(fig, ax, kernel, fit.center, small=True)
        thumbnail = (f'<img src="{_png(fig, dpi=72)}" alt="kernel thumbnail" '
                     'style="margin-right:12px"/>')
    return ('<div style="display:flex;align-items:flex-start;gap:4px">'
            f'{thumbnail}<table><caption style="text-align:left"><b>KernelFit</b></caption>'
            f"{table}</table></div>")


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _kernel_of(fit) -> np.ndarray:
    kernel = np.asarray(fit.kernel, dtype=np.float64)
    if kernel.ndim != 2:
        raise ValueError(f"the report draws 2-D kernels; fit.kernel has shape {kernel.shape}")
    return kernel


def _pairs(fit, a, b):
    """``[(a_i or None, b_i or None, residual_i or None)]``, validated against the fit."""
    residual = fit.residual
    multi = isinstance(residual, (list, tuple))
    residuals = list(residual) if multi else [residual]
    n = len(residuals)
    images = {}
    for name, value in (("a", a), ("b", b)):
        if value is None:
            images[name] = [None] * n
            continue
        is_list = isinstance(value, (list, tuple)) and not _is_one_image(value)
        if is_list != multi:
            raise ValueError(
                f"{name} is {'a list of images' if is_list else 'one image'} but the fit was "
                f"made from {n} image pair{'s' if n != 1 else ''}; pass {name} as the fit got "
                "it")
        values = list(value) if is_list else [value]
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} images but the fit has {n} pairs")
        images[name] = [as_image(v, f"{name}[{i}]" if multi else name).astype(np.float64)
                        for i, v in enumerate(values)]
    for i, (bi, ri) in enumerate(zip(images["b"], residuals)):
        if bi is not None and ri is not None and np.shape(bi) != np.shape(ri):
            label = f"b[{i}]" if multi else "b"
            raise ValueError(
                f"{label} has shape {bi.shape} but fit.residual has shape {np.shape(ri)}; "
                "pass the b the fit was made from")
    return list(zip(images["a"], images["b"], residuals))


def _is_one_image(value) -> bool:
    """A list of rows (one image) rather than a list of images."""
    try:
        return np.ndim(value[0]) == 1
    except (IndexError, TypeError, ValueError):
        return False


def _prediction(fit, kernel, a, b, residual):
    """``a ⊛ k`` in ``b``'s frame (NaN outside the part the boundary rule defines), or None."""
    if a is None:
        return None, ""
    if b is not None and residual is not None and fit.background is not None:
        return b - residual, "b − residual = a ⊛ k + fitted background (used pixels)"
    if getattr(fit, "varying", None) is not None:
        if b is not None and residual is not None:
            return b - residual, "b − residual = a ⊛ k(y, x), the varying kernel (used pixels)"
        return None, ""
    if b is not None:
        size = output_size_of(a.shape, b.shape, kernel.shape)
    else:
        size = "valid" if fit.boundary == "valid" else "same"
    try:
        geometry = make_geometry(a.shape, kernel.shape, boundary=fit.boundary,
                                 center=fit.center, output_size=size)
    except ValueError:
        return None, ""
    out = np.full(geometry.output_shape, np.nan)
    out[geometry.used] = convolve_extended(geometry.extend(a), kernel)
    note = "a ⊛ k"
    if fit.background is not None:
        note += " (fitted background not included: pass b to include it)"
    return out, note


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

_SECTION_NAMES = [("kernel", "Kernel"), ("parameters", "Parameters"), ("images", "Images"),
                  ("selection", "Automatic choices"), ("diagnostics", "Diagnostics"),
                  ("summary", "Summary")]


def _section(anchor, heading, body) -> str:
    return (f'<section id="{anchor}"><h2>{html.escape(heading)}</h2>\n{body}\n</section>')


def _figure_html(fig, alt, caption="") -> str:
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{_png(fig)}" alt="{html.escape(alt)}"/>{cap}</figure>'


def _kernel_section(fit, kernel) -> str:
    stderr = fit.stderr if isinstance(fit.stderr, np.ndarray) else None
    if stderr is not None and (stderr.shape != kernel.shape or not np.isfinite(stderr).any()):
        stderr = None
    n = 2 if stderr is None else 3
    fig = _figure(4.3 * n, 3.9)
    ax = fig.add_subplot(1, n, 1)
    _draw_kernel(fig, ax, kernel, fit.center)
    if stderr is not None:
        ax = fig.add_subplot(1, n, 2)
        image = ax.imshow(np.where(np.isfinite(stderr), stderr, np.nan), cmap="magma",
                          interpolation="nearest")
        _mark_center(ax, fit.center)
        ax.set_title("standard error per coefficient")
        ax.set_xlabel("column j")
        ax.set_ylabel("row i")
        fig.colorbar(image, ax=ax, shrink=0.85)
    ax = fig.add_subplot(1, n, n)
    _draw_radial_profile(ax, kernel, fit.center)
    fig.tight_layout()
    images = _figure_html(
        fig, "kernel image, radial profile",
        f"k[i, j] in convolution orientation: b[y, x] = Σ k[i, j]·a[y + {fit.center[0]} − i, "
        f"x + {fit.center[1]} − j]; + marks the centre {tuple(fit.center)}.  The profile plots "
        "every coefficient against its distance from the centre, with the mean per 1-pixel ring.")
    fig = _figure(5.2, 3.4)
    ax = fig.add_subplot()
    freq, mtf, normalised = _mtf(kernel)
    ax.plot(freq, mtf, color="#1f5fa8", lw=1.8)
    ax.axhline(0.5, color="#999", lw=0.8, ls=":")
    ax.set_xlim(0, 0.5)
    ax.set_xlabel("spatial frequency (cycles/pixel)")
    ax.set_ylabel("|k̂| / |k̂(0)|" if normalised else "|k̂| / max |k̂|")
    ax.set_title("MTF (radially averaged |FFT| of the kernel)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    mtf_html = _figure_html(
        fig, "kernel MTF",
        "Modulation transfer function: how much of each spatial frequency the kernel passes "
        "(1 = untouched); the dotted line is 0.5 (MTF50).")
    return _section("kernel", "Kernel", images + mtf_html + _variation_figure(fit))


def _variation_figure(fit) -> str:
    """For a spatially varying kernel: the kernel at a 3×3 grid of positions of ``b``."""
    varying = getattr(fit, "varying", None)
    if varying is None:
        return ""
    H, W = varying.frame
    rows, cols = [0.0, (H - 1) / 2, H - 1.0], [0.0, (W - 1) / 2, W - 1.0]
    kernels = [[varying.at(y, x) for x in cols] for y in rows]
    top = max(float(np.abs(k).max()) for row in kernels for k in row) or 1.0
    fig = _figure(7.5, 7.0)
    for i, y in enumerate(rows):
        for j, x in enumerate(cols):
            ax = fig.add_subplot(3, 3, 3 * i + j + 1)
            ax.imshow(kernels[i][j], cmap="viridis", vmin=min(0.0, -top), vmax=top,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"(y, x) = ({y:.0f}, {x:.0f})", fontsize=8)
    fig.tight_layout()
    return _figure_html(
        fig, "kernel across the image",
        f"The kernel at the corners, edge midpoints and centre of b (degree {varying.degree} "
        "polynomial in the position; one colour scale for all).  The panels above show the "
        "kernel at the centre.")


def _parameters_section(fit, kernel) -> str:
    rows = []
    errors = fit.stderr if isinstance(fit.stderr, dict) else {}
    for name, value in fit.params.items():
        if np.ndim(value) == 0:
            error = errors.get(name)
            relative = ""
            if error is not None and np.isfinite(error) and float(value) != 0:
                relative = f"{100 * abs(float(error) / float(value)):.2g} %"
            rows.append((name, _fmt(value), "—" if error is None else _fmt(error), relative))
        else:
            arr = np.asarray(value, dtype=float)
            shown = (np.array2string(arr, precision=4, suppress_small=True)
                     if arr.size <= _MAX_ARRAY_VALUES else f"array of shape {arr.shape}")
            error = errors.get(name)
            spread = "—"
            if error is not None and np.size(error) <= _MAX_ARRAY_VALUES:
                spread = np.array2string(np.asarray(error, float), precision=3)
            rows.append((name, shown, spread, ""))
    body = ""
    if rows:
        body += _table(("parameter", "value", "± standard error", "relative"), rows,
                       caption=f"{fit.model} model parameters")
    body += _table(("quantity", "value"), _kernel_numbers(fit, kernel),
                   caption="kernel summary numbers")
    return _section("parameters", "Parameters", body)


def _kernel_numbers(fit, kernel) -> list[tuple[str, str]]:
    """Numbers that describe any kernel: sum, peak, centroid, width, negativity, MTF50."""
    total = float(kernel.sum())
    rows = []
    cov = fit.cov if isinstance(fit.cov, np.ndarray) else None
    if cov is not None and cov.shape == (kernel.size, kernel.size):
        rows.append(("sum", _with_error(total, math.sqrt(max(float(cov.sum()), 0.0)))))
    else:
        rows.append(("sum", _fmt(total)))
    peak = np.unravel_index(int(np.argmax(np.abs(kernel))), kernel.shape)
    rows.append(("peak value (index)", f"{_fmt(kernel[peak])} at {tuple(int(i) for i in peak)}"))
    weight = np.abs(kernel)
    if weight.sum() > 0:
        yy, xx = np.indices(kernel.shape, dtype=float)
        cy = float((weight * yy).sum() / weight.sum())
        cx = float((weight * xx).sum() / weight.sum())
        rows.append(("centroid of |k| − centre (dy, dx)",
                     f"({cy - fit.center[0]:+.3g}, {cx - fit.center[1]:+.3g}) pixels"))
        var = float((weight * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / weight.sum()) / 2
        sigma = math.sqrt(var)
        rows.append(("second-moment width σ (FWHM if Gaussian)",
                     f"{sigma:.3g} pixels ({2 * math.sqrt(2 * math.log(2)) * sigma:.3g})"))
        rows.append(("negative part Σ|k<0| / Σ|k|",
                     f"{float(np.abs(kernel[kernel < 0]).sum() / weight.sum()):.3g}"))
    freq, mtf, normalised = _mtf(kernel)
    below = np.nonzero(mtf < 0.5)[0]
    if normalised:
        rows.append(("MTF50", "above 0.5 cycles/pixel" if not below.size
                     else f"{freq[below[0]]:.3g} cycles/pixel"))
    stderr = fit.stderr if isinstance(fit.stderr, np.ndarray) else None
    if stderr is not None and np.isfinite(stderr).any():
        rows.append(("median standard error per coefficient", _fmt(np.nanmedian(stderr))))
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = np.abs(kernel) / stderr
        if np.isfinite(snr).any():
            rows.append(("largest |k| / stderr", _fmt(np.nanmax(np.where(np.isfinite(snr),
                                                                         snr, np.nan)))))
    return rows


def _images_section(fit, pairs, max_pairs) -> str:
    parts = []
    n = len(pairs)
    if n > max_pairs:
        parts.append(f"<p>Showing {max_pairs} of {n} image pairs.</p>")
    kernel = _kernel_of(fit)
    for index, (a, b, residual) in enumerate(pairs[:max_pairs]):
        label = f" (pair {index})" if n > 1 else ""
        prediction, note = _prediction(fit, kernel, a, b, residual)
        panels = [(name, image) for name, image in
                  (("a" + label, a), ("b" + label, b), ("prediction" + label, prediction))
                  if image is not None]
        if panels:
            parts.append(_image_row(panels, b if b is not None else prediction, note))
        if residual is not None:
            parts.append(_residual_row(fit, residual, label))
    if not parts:
        return ""
    if all(a is None for a, _, _ in pairs):
        parts.insert(0, "<p class=note>a and b were not passed to the report, so only the "
                     "residual is shown: <code>fit.report(path, a=a, b=b)</code> adds a, b "
                     "and the prediction.</p>")
    return _section("images", "Images", "\n".join(parts))


def _image_row(panels, reference, note) -> str:
    # b and the prediction share one colour scale, so that they can be compared by eye.
    shared = _limits(reference) if reference is not None else None
    height, width = panels[0][1].shape
    aspect = min(max(height / width, 0.3), 2.5)
    fig = _figure(4.0 * len(panels), 3.6 * aspect + 0.6)
    for i, (name, image) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        limits = _limits(image) if name.startswith("a") else shared
        shown, step = _display(image)
        im = ax.imshow(shown, cmap=_colormap("gray", bad="#d9a441"), vmin=limits[0],
                       vmax=limits[1], extent=_extent(image.shape))
        ax.set_title(name + (f"  (every {step}th pixel)" if step > 1 else ""))
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    caption = ("Images on their own 0.5–99.5 % range (b and the prediction share b's); pixels "
               "where the prediction is undefined are amber.")
    if note:
        caption += f"  Prediction: {note}."
    return _figure_html(fig, "images a, b and prediction", caption)


def _residual_row(fit, residual, label) -> str:
    residual = np.asarray(residual, dtype=float)
    finite = residual[np.isfinite(residual)]
    height, width = residual.shape
    aspect = min(max(height / width, 0.3), 2.5)
    fig = _figure(9.0, 3.6 * aspect + 0.6)
    ax = fig.add_subplot(1, 2, 1)
    limit = float(np.percentile(np.abs(finite), 99.5)) if finite.size else 1.0
    limit = limit if limit > 0 else 1.0
    shown, step = _display(residual)
    cmap = _colormap("RdBu_r", bad="#bbbbbb")
    im = ax.imshow(shown, cmap=cmap, vmin=-limit, vmax=limit, extent=_extent(residual.shape))
    ax.set_title("residual b − prediction" + label)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax = fig.add_subplot(1, 2, 2)
    if finite.size:
        bins = min(100, max(10, int(np.sqrt(finite.size))))
        counts, edges, _ = ax.hist(finite, bins=bins, color="#4a78b5", alpha=0.85,
                                   label="residuals")
        sigma = fit.noise_std
        if np.isfinite(sigma) and sigma > 0:
            x = np.linspace(edges[0], edges[-1], 400)
            width_bin = edges[1] - edges[0]
            ax.plot(x, finite.size * width_bin * np.exp(-0.5 * (x / sigma) ** 2)
                    / (sigma * math.sqrt(2 * math.pi)), color="#c0392b", lw=1.5,
                    label=f"N(0, {sigma:.3g}²)")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.5)
        ax.legend(fontsize=8)
    ax.set_xlabel("residual (units of b)")
    ax.set_ylabel("pixels (log scale)")
    ax.set_title("residual histogram")
    fig.tight_layout()
    unused = residual.size - finite.size
    return _figure_html(
        fig, "residual map and histogram",
        f"Residual on a symmetric scale (±{limit:.3g}, the 99.5 % point of |r|); "
        f"{unused} unused pixel{'s' if unused != 1 else ''} in grey.  The histogram should "
        "follow the red curve, the noise level the fit estimated; heavy tails mean outliers "
        "(try loss='huber' or a mask).")


def _selection_section(fit) -> str:
    parts = []
    for key, value in fit.info.items():
        if not isinstance(value, dict):
            continue
        if key == "lambda_selection" or {"lams", "scores"} <= value.keys():
            part = _lambda_figure(fit, value)
        elif key.endswith("_selection") or key.endswith("_scores"):
            part = _scores_figure(key, value)
        else:
            continue
        if part:
            parts.append(part)
    return _section("selection", "Automatic choices", "\n".join(parts)) if parts else ""


def _lambda_figure(fit, selection) -> str:
    lams = np.asarray(selection.get("lams", []), dtype=float)
    scores = np.asarray(selection.get("scores", []), dtype=float)
    if lams.ndim != 1 or lams.shape != scores.shape or not lams.size:
        return ""
    ok = np.isfinite(lams) & np.isfinite(scores) & (lams > 0)
    if not ok.any():
        return ""
    criterion = str(selection.get("criterion", "score"))
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    ax.plot(lams[ok], scores[ok], "-", color="#1f5fa8", lw=1.6, marker=".", ms=4)
    ax.set_xscale("log")
    if (scores[ok] > 0).all() and scores[ok].max() > 20 * scores[ok].min():
        ax.set_yscale("log")
    if fit.lam is not None and fit.lam > 0:
        ax.axvline(fit.lam, color="#c0392b", lw=1.2, ls="--", label=f"chosen λ = {fit.lam:.3g}")
        ax.legend(fontsize=8)
    ax.set_xlabel("λ (per pixel)")
    ax.set_ylabel(criterion)
    ax.set_title(f"λ selection by {criterion}")
    ax.grid(alpha=0.3, which="both")
    edf = np.asarray(selection.get("edf", []), dtype=float) if selection.get("edf") is not None \
        else np.array([])
    if edf.shape == lams.shape and np.isfinite(edf[ok]).any():
        twin = ax.twinx()
        twin.plot(lams[ok], edf[ok], color="#7f8c8d", lw=1, ls=":")
        twin.set_ylabel("effective parameters (dotted)", color="#7f8c8d")
    fig.tight_layout()
    caption = (f"The {criterion} score over the λ searched (log scale); the chosen λ is dashed.")
    message = selection.get("message")
    if message:
        caption += f"  {message}"
    return _figure_html(fig, "lambda selection curve", caption)


def _scores_figure(key, value) -> str:
    """Bar chart of candidate scores: ``{label: score}`` or ``candidates`` + ``scores``."""
    labels, scores = None, None
    if "candidates" in value and "scores" in value:
        labels = [str(c) for c in value["candidates"]]
        scores = value["scores"]
    elif "scores" in value and isinstance(value["scores"], dict):
        labels, scores = [str(k) for k in value["scores"]], list(value["scores"].values())
    elif value and all(np.ndim(v) == 0 and isinstance(v, (int, float, np.number))
                       for v in value.values()):
        labels, scores = [str(k) for k in value], list(value.values())
    if labels is None:
        return ""
    try:
        scores = np.asarray(scores, dtype=float)
    except (TypeError, ValueError):
        return ""
    if scores.ndim != 1 or len(labels) != scores.size or not scores.size:
        return ""
    chosen = next((str(value[k]) for k in ("chosen", "choice", "best", "selected")
                   if k in value and np.ndim(value[k]) == 0), None)
    fig = _figure(max(4.0, 0.6 * len(labels) + 2), 3.2)
    ax = fig.add_subplot()
    colours = ["#c0392b" if label == chosen else "#4a78b5" for label in labels]
    ax.bar(range(len(labels)), np.where(np.isfinite(scores), scores, 0), color=colours)
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 6 else 0)
    name = key.replace("_", " ")
    ax.set_title(name)
    ax.set_ylabel("score")
    fig.tight_layout()
    caption = f"fit.info['{key}']" + (f"; chosen: {chosen} (red)" if chosen else "")
    return _figure_html(fig, name, caption)


def _diagnostics_section(fit) -> str:
    rows = [("shape", f"{fit.shape[0]}×{fit.shape[1]}"), ("center", str(tuple(fit.center))),
            ("boundary", fit.boundary), ("model", fit.model), ("method", fit.method),
            ("pixels used (n_used)", str(fit.n_used)), ("noise_std", _fmt(fit.noise_std)),
            ("lam", "—" if fit.lam is None else _fmt(fit.lam)),
            ("converged", "yes" if fit.converged else "NO — not trusted"),
            ("message", fit.message or "—")]
    if fit.background is not None:
        bg = np.asarray(fit.background, dtype=float)
        rows.append(("background coefficients",
                     np.array2string(bg, precision=4) if bg.size <= _MAX_ARRAY_VALUES
                     else f"array of shape {bg.shape}"))
    rows.extend(_scalar_info(fit.info))
    return _section("diagnostics", "Diagnostics",
                    _table(("diagnostic", "value"), rows, caption="the fit and fit.info"))


def _scalar_info(info, prefix="", depth=0) -> list[tuple[str, str]]:
    """Every scalar (and short list of scalars) in ``info``, nested keys joined by dots."""
    rows = []
    for key, value in info.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if depth < 2:
                rows.extend(_scalar_info(value, name + ".", depth + 1))
        elif isinstance(value, (str, bool, np.bool_)):
            rows.append((f"info.{name}", str(value) if str(value) else "—"))
        elif isinstance(value, (int, float, np.number)):
            rows.append((f"info.{name}", _fmt(value)))
        elif (isinstance(value, (list, tuple)) and 0 < len(value) <= 6
              and all(isinstance(v, (int, float, str, np.number)) for v in value)):
            rows.append((f"info.{name}", ", ".join(
                v if isinstance(v, str) else _fmt(v) for v in value)))
    return rows


def _status_banner(fit) -> str:
    if fit.converged:
        text = "status: ok" + (f" — {fit.message}" if fit.message else "")
        return f'<p class="status ok">{html.escape(text)}</p>'
    return ('<p class="status bad">' + html.escape(
        "status: NOT TRUSTED — " + (fit.message or "see the diagnostics")) + "</p>")


def _table(header, rows, caption="") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _png(fig, dpi=96) -> str:
    """The figure as a ``data:image/png;base64,...`` URI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = _bytes_io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _colormap(name, bad):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=bad)


def _draw_kernel(fig, ax, kernel, center, small=False) -> None:
    finite = kernel[np.isfinite(kernel)]
    top = float(np.abs(finite).max()) if finite.size else 1.0
    signed = finite.size and finite.min() < -0.05 * top
    if signed:
        im = ax.imshow(kernel, cmap=_colormap("RdBu_r", "#bbbbbb"), vmin=-top, vmax=top,
                       interpolation="nearest")
    else:
        im = ax.imshow(kernel, cmap=_colormap("viridis", "#bbbbbb"), interpolation="nearest")
    _mark_center(ax, center)
    if small:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("kernel", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
        fig.tight_layout()
        return
    ax.set_title("kernel k (convolution orientation)")
    ax.set_xlabel("column j")
    ax.set_ylabel("row i")
    fig.colorbar(im, ax=ax, shrink=0.85)


def _mark_center(ax, center) -> None:
    ax.plot([center[1]], [center[0]], marker="+", color="#e74c3c", ms=12, mew=2)


def _draw_radial_profile(ax, kernel, center) -> None:
    yy, xx = np.indices(kernel.shape, dtype=float)
    r = np.hypot(yy - center[0], xx - center[1]).ravel()
    k = kernel.ravel()
    if k.size <= 5000:
        ax.plot(r, k, ".", color="#4a78b5", alpha=0.5, ms=4, label="coefficients")
    ring = np.rint(r).astype(int)
    counts = np.bincount(ring)
    sums = np.bincount(ring, weights=k)
    have = counts > 0
    ax.plot(np.nonzero(have)[0], sums[have] / counts[have], "-", color="#c0392b", lw=1.6,
            label="ring mean")
    ax.axhline(0, color="#999", lw=0.8)
    ax.set_xlabel("distance from centre (pixels)")
    ax.set_ylabel("k")
    ax.set_title("radial profile")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _mtf(kernel):
    """Radially averaged ``|FFT|``: (frequency in cycles/pixel, value, normalised by k̂(0))."""
    n = int(min(1024, max(64, 2 ** math.ceil(math.log2(4 * max(kernel.shape))))))
    n = max(n, *kernel.shape)
    spectrum = np.abs(np.fft.rfft2(kernel, s=(n, n)))
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    radius = np.hypot(fy, fx)
    bins = np.rint(radius * n).astype(int).ravel()
    keep = bins <= n // 2
    counts = np.bincount(bins[keep])
    sums = np.bincount(bins[keep], weights=spectrum.ravel()[keep])
    have = counts > 0
    freq = np.nonzero(have)[0] / n
    mtf = sums[have] / counts[have]
    dc = abs(float(kernel.sum()))
    normalised = dc > 1e-12 * max(float(np.abs(kernel).sum()), 1e-300)
    scale = dc if normalised else max(float(mtf.max()), 1e-300)
    return freq, mtf / scale, normalised


def _display(image):
    """``image`` strided so that neither side exceeds the display limit, and the stride."""
    step = max(1, math.ceil(max(image.shape) / _DISPLAY_MAX))
    return (image[::step, ::step] if step > 1 else image), step


def _extent(shape):
    # Pixel-centre coordinates of the full image, also when it is drawn strided.
    return (-0.5, shape[1] - 0.5, shape[0] - 0.5, -0.5)


def _limits(image):
    finite = image[np.isfinite(image)]
    if not finite.size:
        return 0.0, 1.0
    low, high = np.percentile(finite, [0.5, 99.5])
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
        if high <= low:
            low, high = low - 0.5, high + 0.5
    return float(low), float(high)


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    return "nan" if math.isnan(value) else f"{value:.4g}"


def _with_error(value, error) -> str:
    if error is None:
        return _fmt(value)
    return f"{_fmt(value)} ± {float(error):.3g}"


def _version() -> str:
    # From the installed metadata, not kernelfit.__version__: the report is a layer below the
    # package's public names and must not import them.
    try:
        return f"kernelfit {importlib.metadata.version('kernelfit')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "kernelfit"


_STYLE = """
:root { --ink:#1d2330; --muted:#5b6475; --line:#d8dde6; --bg:#f5f7fa; --card:#fff;
        --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; }
header { background:#16324f; color:#fff; padding:18px 28px 12px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header p { margin:0; color:#c9d6e6; }
nav { margin-top:10px; }
nav a { color:#fff; margin-right:16px; text-decoration:none; font-size:14px;
        border-bottom:1px solid rgba(255,255,255,.4); }
main { max-width:1180px; margin:0 auto; padding:8px 20px 32px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
          padding:6px 20px 16px; margin:18px 0; }
h2 { font-size:18px; color:var(--accent); border-bottom:1px solid var(--line);
     padding-bottom:4px; }
figure { margin:12px 0 18px; }
figure img { max-width:100%; height:auto; display:block; }
figcaption { color:var(--muted); font-size:13px; max-width:980px; margin-top:4px; }
table { border-collapse:collapse; margin:10px 0 18px; font-size:14px; min-width:420px; }
caption { text-align:left; color:var(--muted); font-size:13px; padding-bottom:4px; }
th, td { border-bottom:1px solid var(--line); padding:4px 14px 4px 6px; text-align:left;
         vertical-align:top; }
th { background:#eef2f7; font-weight:600; }
td { font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) td { background:#fafbfd; }
pre { background:#0f1b2a; color:#e6edf5; padding:12px 14px; border-radius:6px;
      overflow-x:auto; font-size:13px; line-height:1.4; }
.status { margin:14px 0 0; padding:8px 14px; border-radius:6px; font-weight:600; }
.status.ok { background:#e3f4e8; color:#1e6b3a; border:1px solid #b9e0c5; }
.status.bad { background:#fdecea; color:#a12a1f; border:1px solid #f3c1bb; }
.note { color:var(--muted); }
footer { color:var(--muted); font-size:12px; text-align:center; padding-bottom:20px; }
"""

# Sets data-figures / data-figures-loaded / data-errors on <html> after the load event, for
# browser tests (see the module docstring).  It logs nothing.
_SCRIPT = """
(function () {
  var errors = 0;
  window.addEventListener("error", function () { errors += 1; }, true);
  window.addEventListener("load", function () {
    var images = document.images, loaded = 0;
    for (var i = 0; i < images.length; i++) {
      if (images[i].complete && images[i].naturalWidth > 0) { loaded += 1; }
    }
    var root = document.documentElement;
    root.setAttribute("data-figures", loaded + "/" + images.length);
    root.setAttribute("data-figures-loaded", loaded === images.length ? "true" : "false");
    root.setAttribute("data-errors", String(errors));
  });
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"/>
<title>{title}</title>
<style>{style}</style>
<script>{script}</script>
</head>
<body>
<header>
<h1>{title}</h1>
<p>{subtitle}</p>
<nav>{nav}</nav>
</header>
<main>
{status}
{body}
</main>
<footer>{version} · self-contained report: figures are embedded PNG images</footer>
</body>
</html>
"""
