"""The sections of the report: kernel, parameters, images, automatic choices, diagnostics.

Each builder takes the fit (and what it needs of the images) and returns the section's HTML,
or ``""`` when the fit has nothing to show there; :mod:`~kernelfit.report.html` puts them on
the page.
"""

from __future__ import annotations

import html
import math

import numpy as np

from .figures import (
    colormap_with_bad,
    display_limits,
    draw_kernel,
    draw_radial_profile,
    figure_html,
    mark_center,
    new_figure,
    pixel_extent,
    radial_mtf,
    strided,
)
from .format import fmt, html_section, html_table, with_error
from .inputs import kernel_of, prediction_of

# The page shows at most this many numbers for an array-valued parameter.
_MAX_ARRAY_VALUES = 16

SECTION_NAMES = [("kernel", "Kernel"), ("parameters", "Parameters"), ("images", "Images"),
                  ("selection", "Automatic choices"), ("diagnostics", "Diagnostics"),
                  ("summary", "Summary")]


def kernel_section(fit, kernel) -> str:
    stderr = fit.stderr if isinstance(fit.stderr, np.ndarray) else None
    if stderr is not None and (stderr.shape != kernel.shape or not np.isfinite(stderr).any()):
        stderr = None
    n = 2 if stderr is None else 3
    fig = new_figure(4.3 * n, 3.9)
    ax = fig.add_subplot(1, n, 1)
    draw_kernel(fig, ax, kernel, fit.center)
    if stderr is not None:
        ax = fig.add_subplot(1, n, 2)
        image = ax.imshow(np.where(np.isfinite(stderr), stderr, np.nan), cmap="magma",
                          interpolation="nearest")
        mark_center(ax, fit.center)
        ax.set_title("standard error per coefficient")
        ax.set_xlabel("column j")
        ax.set_ylabel("row i")
        fig.colorbar(image, ax=ax, shrink=0.85)
    ax = fig.add_subplot(1, n, n)
    draw_radial_profile(ax, kernel, fit.center)
    fig.tight_layout()
    images = figure_html(
        fig, "kernel image, radial profile",
        f"k[i, j] in convolution orientation: b[y, x] = Σ k[i, j]·a[y + {fit.center[0]} − i, "
        f"x + {fit.center[1]} − j]; + marks the centre {tuple(fit.center)}.  The profile plots "
        "every coefficient against its distance from the centre, with the mean per 1-pixel ring.")
    fig = new_figure(5.2, 3.4)
    ax = fig.add_subplot()
    freq, mtf, normalised = radial_mtf(kernel)
    ax.plot(freq, mtf, color="#1f5fa8", lw=1.8)
    ax.axhline(0.5, color="#999", lw=0.8, ls=":")
    ax.set_xlim(0, 0.5)
    ax.set_xlabel("spatial frequency (cycles/pixel)")
    ax.set_ylabel("|k̂| / |k̂(0)|" if normalised else "|k̂| / max |k̂|")
    ax.set_title("MTF (radially averaged |FFT| of the kernel)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    mtf_html = figure_html(
        fig, "kernel MTF",
        "Modulation transfer function: how much of each spatial frequency the kernel passes "
        "(1 = untouched); the dotted line is 0.5 (MTF50).")
    return html_section("kernel", "Kernel", images + mtf_html + _variation_figure(fit))


def _variation_figure(fit) -> str:
    """For a spatially varying kernel: the kernel at a 3×3 grid of positions of ``b``."""
    varying = getattr(fit, "varying", None)
    if varying is None:
        return ""
    H, W = varying.frame
    rows, cols = [0.0, (H - 1) / 2, H - 1.0], [0.0, (W - 1) / 2, W - 1.0]
    kernels = [[varying.at(y, x) for x in cols] for y in rows]
    top = max(float(np.abs(k).max()) for row in kernels for k in row) or 1.0
    fig = new_figure(7.5, 7.0)
    for i, y in enumerate(rows):
        for j, x in enumerate(cols):
            ax = fig.add_subplot(3, 3, 3 * i + j + 1)
            ax.imshow(kernels[i][j], cmap="viridis", vmin=min(0.0, -top), vmax=top,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"(y, x) = ({y:.0f}, {x:.0f})", fontsize=8)
    fig.tight_layout()
    return figure_html(
        fig, "kernel across the image",
        f"The kernel at the corners, edge midpoints and centre of b (degree {varying.degree} "
        "polynomial in the position; one colour scale for all).  The panels above show the "
        "kernel at the centre.")


def parameters_section(fit, kernel) -> str:
    rows = []
    errors = fit.stderr if isinstance(fit.stderr, dict) else {}
    shown = fit.shown_params() if hasattr(fit, "shown_params") else fit.params
    for name, value in shown.items():
        if np.ndim(value) == 0:
            error = errors.get(name)
            relative = ""
            if error is not None and np.isfinite(error) and float(value) != 0:
                relative = f"{100 * abs(float(error) / float(value)):.2g} %"
            rows.append((name, fmt(value), "—" if error is None else fmt(error), relative))
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
        body += html_table(("parameter", "value", "± standard error", "relative"), rows,
                       caption=f"{fit.model} model parameters")
    body += html_table(("quantity", "value"), kernel_numbers(fit, kernel),
                   caption="kernel summary numbers")
    return html_section("parameters", "Parameters", body)


def kernel_numbers(fit, kernel) -> list[tuple[str, str]]:
    """Numbers that describe any kernel: sum, peak, centroid, width, negativity, MTF50."""
    total = float(kernel.sum())
    rows = []
    cov = fit.cov if isinstance(fit.cov, np.ndarray) else None
    if cov is not None and cov.shape == (kernel.size, kernel.size):
        rows.append(("sum", with_error(total, math.sqrt(max(float(cov.sum()), 0.0)))))
    else:
        rows.append(("sum", fmt(total)))
    peak = np.unravel_index(int(np.argmax(np.abs(kernel))), kernel.shape)
    rows.append(("peak value (index)", f"{fmt(kernel[peak])} at {tuple(int(i) for i in peak)}"))
    weight = np.abs(kernel)
    if weight.sum() > 0:
        yy, xx = np.indices(kernel.shape, dtype=float)
        cy = float((weight * yy).sum() / weight.sum())
        cx = float((weight * xx).sum() / weight.sum())
        rows.append(("centroid of |k| − centre (dy, dx)",
                     f"({cy - fit.center[0]:+.3g}, {cx - fit.center[1]:+.3g}) pixels"))
        var = float((weight * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / weight.sum()) / 2
        sigma = math.sqrt(var)
        rows.append(("second-moment width σ of |k|",
                     f"{sigma:.3g} pixels (a Gaussian with this σ has FWHM "
                     f"{2 * math.sqrt(2 * math.log(2)) * sigma:.3g}; a fitted family's own "
                     "FWHM is among the parameters)"))
        rows.append(("negative part Σ|k<0| / Σ|k|",
                     f"{float(np.abs(kernel[kernel < 0]).sum() / weight.sum()):.3g}"))
    freq, mtf, normalised = radial_mtf(kernel)
    below = np.nonzero(mtf < 0.5)[0]
    if normalised:
        rows.append(("MTF50", "above 0.5 cycles/pixel" if not below.size
                     else f"{freq[below[0]]:.3g} cycles/pixel"))
    stderr = fit.stderr if isinstance(fit.stderr, np.ndarray) else None
    if stderr is not None and np.isfinite(stderr).any():
        rows.append(("median standard error per coefficient", fmt(np.nanmedian(stderr))))
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = np.abs(kernel) / stderr
        if np.isfinite(snr).any():
            rows.append(("largest |k| / stderr", fmt(np.nanmax(np.where(np.isfinite(snr),
                                                                         snr, np.nan)))))
    return rows


def images_section(fit, pairs, max_pairs) -> str:
    parts = []
    n = len(pairs)
    if n > max_pairs:
        parts.append(f"<p>Showing {max_pairs} of {n} image pairs.</p>")
    kernel = kernel_of(fit)
    for index, (a, b, residual) in enumerate(pairs[:max_pairs]):
        label = f" (pair {index})" if n > 1 else ""
        prediction, note = prediction_of(fit, kernel, a, b, residual)
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
    return html_section("images", "Images", "\n".join(parts))


def _image_row(panels, reference, note) -> str:
    # b and the prediction share one colour scale, so that they can be compared by eye.
    shared = display_limits(reference) if reference is not None else None
    height, width = panels[0][1].shape
    aspect = min(max(height / width, 0.3), 2.5)
    fig = new_figure(4.0 * len(panels), 3.6 * aspect + 0.6)
    for i, (name, image) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        limits = display_limits(image) if name.startswith("a") else shared
        shown, step = strided(image)
        im = ax.imshow(shown, cmap=colormap_with_bad("gray", bad="#d9a441"), vmin=limits[0],
                       vmax=limits[1], extent=pixel_extent(image.shape))
        ax.set_title(name + (f"  (every {step}th pixel)" if step > 1 else ""))
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    caption = ("Images on their own 0.5–99.5 % range (b and the prediction share b's); pixels "
               "where the prediction is undefined are amber.")
    if note:
        caption += f"  Prediction: {note}."
    return figure_html(fig, "images a, b and prediction", caption)


def _residual_row(fit, residual, label) -> str:
    residual = np.asarray(residual, dtype=float)
    finite = residual[np.isfinite(residual)]
    height, width = residual.shape
    aspect = min(max(height / width, 0.3), 2.5)
    fig = new_figure(9.0, 3.6 * aspect + 0.6)
    ax = fig.add_subplot(1, 2, 1)
    limit = float(np.percentile(np.abs(finite), 99.5)) if finite.size else 1.0
    limit = limit if limit > 0 else 1.0
    shown, step = strided(residual)
    cmap = colormap_with_bad("RdBu_r", bad="#bbbbbb")
    im = ax.imshow(shown, cmap=cmap, vmin=-limit, vmax=limit, extent=pixel_extent(residual.shape))
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
    return figure_html(
        fig, "residual map and histogram",
        f"Residual on a symmetric scale (±{limit:.3g}, the 99.5 % point of |r|); "
        f"{unused} unused pixel{'s' if unused != 1 else ''} in grey.  The histogram should "
        "follow the red curve, the noise level the fit estimated; heavy tails mean outliers "
        "(try loss='huber' or a mask).")


def selection_section(fit) -> str:
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
    return html_section("selection", "Automatic choices", "\n".join(parts)) if parts else ""


def _lambda_figure(fit, selection) -> str:
    lams = np.asarray(selection.get("lams", []), dtype=float)
    scores = np.asarray(selection.get("scores", []), dtype=float)
    if lams.ndim != 1 or lams.shape != scores.shape or not lams.size:
        return ""
    ok = np.isfinite(lams) & np.isfinite(scores) & (lams > 0)
    if not ok.any():
        return ""
    criterion = str(selection.get("criterion", "score"))
    fig = new_figure(6.4, 3.6)
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
    return figure_html(fig, "lambda selection curve", caption)


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
    fig = new_figure(max(4.0, 0.6 * len(labels) + 2), 3.2)
    ax = fig.add_subplot()
    colours = ["#c0392b" if label == chosen else "#4a78b5" for label in labels]
    ax.bar(range(len(labels)), np.where(np.isfinite(scores), scores, 0), color=colours)
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 6 else 0)
    name = key.replace("_", " ")
    ax.set_title(name)
    ax.set_ylabel("score")
    fig.tight_layout()
    caption = f"fit.info['{key}']" + (f"; chosen: {chosen} (red)" if chosen else "")
    return figure_html(fig, name, caption)


def diagnostics_section(fit) -> str:
    rows = [("shape", f"{fit.shape[0]}×{fit.shape[1]}"), ("center", str(tuple(fit.center))),
            ("boundary", fit.boundary), ("model", fit.model), ("method", fit.method),
            ("pixels used (n_used)", str(fit.n_used)), ("noise_std", fmt(fit.noise_std)),
            ("lam", "—" if fit.lam is None else fmt(fit.lam)),
            ("converged", "yes" if fit.converged else "NO — not trusted"),
            ("message", fit.message or "—")]
    if fit.background is not None:
        bg = np.asarray(fit.background, dtype=float)
        rows.append(("background coefficients",
                     np.array2string(bg, precision=4) if bg.size <= _MAX_ARRAY_VALUES
                     else f"array of shape {bg.shape}"))
    rows.extend(_scalar_info(fit.info))
    return html_section("diagnostics", "Diagnostics",
                    html_table(("diagnostic", "value"), rows, caption="the fit and fit.info"))


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
            rows.append((f"info.{name}", fmt(value)))
        elif (isinstance(value, (list, tuple)) and 0 < len(value) <= 6
              and all(isinstance(v, (int, float, str, np.number)) for v in value)):
            rows.append((f"info.{name}", ", ".join(
                v if isinstance(v, str) else fmt(v) for v in value)))
    return rows


def status_banner(fit) -> str:
    """The fit's verdict (ok / doubtful / failed, kernelfit.fit.verdict) with its reasons,
    coloured by level, and the solver's message."""
    verdict = fit.verdict
    css = {"ok": "ok", "doubtful": "doubtful", "failed": "bad"}[verdict.level]
    parts = [f"status: {verdict.level}", *verdict.reasons]
    if fit.message:
        parts.append(fit.message)
    return f'<p class="status {css}">{html.escape(" — ".join(parts))}</p>'
