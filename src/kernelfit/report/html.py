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

import html
import importlib.metadata
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_output, check_writable
from .figures import draw_kernel, new_figure, png_uri
from .format import fmt, html_section, with_error
from .inputs import image_pairs, kernel_of
from .sections import (
    SECTION_NAMES,
    diagnostics_section,
    images_section,
    kernel_section,
    parameters_section,
    selection_section,
    status_banner,
)

__all__ = ["write_report", "render_report", "render_channel_report", "compact_html",
           "check_report_path"]

REPORT_EXTENSIONS = (".html", ".htm")

_MATPLOTLIB_HINT = "the HTML report needs matplotlib: pip install kernelfit[report]"


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
                  for anchor, name in SECTION_NAMES if f'id="{anchor}"' in "".join(sections))
    return _page(title, _subtitle(fit), nav, status_banner(fit), "\n".join(sections))


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
                     f'{status_banner(fit)}\n{body}\n</section>')
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
    kernel = kernel_of(fit)
    pairs = image_pairs(fit, a, b)
    sections = [kernel_section(fit, kernel), parameters_section(fit, kernel),
                images_section(fit, pairs, max_pairs), selection_section(fit),
                diagnostics_section(fit),
                html_section("summary", "Summary", f"<pre>{html.escape(fit.summary())}</pre>")]
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
            ("pixels used", fit.n_used), ("noise std", fmt(fit.noise_std)),
            ("kernel sum", fmt(float(np.sum(fit.kernel))))]
    if fit.lam is not None:
        rows.append(("λ", fmt(fit.lam)))
    errors = fit.stderr if isinstance(fit.stderr, dict) else {}
    for name, value in fit.params.items():
        if np.ndim(value) == 0:
            rows.append((name, with_error(value, errors.get(name))))
    rows.append(("status", fit.verdict.level))
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
        kernel = kernel_of(fit)
        fig = new_figure(2.6, 2.3)
        ax = fig.add_subplot()
        draw_kernel(fig, ax, kernel, fit.center, small=True)
        thumbnail = (f'<img src="{png_uri(fig, dpi=72)}" alt="kernel thumbnail" '
                     'style="margin-right:12px"/>')
    return ('<div style="display:flex;align-items:flex-start;gap:4px">'
            f'{thumbnail}<table><caption style="text-align:left"><b>KernelFit</b></caption>'
            f"{table}</table></div>")


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
.status.doubtful { background:#fff4dc; color:#7a5200; border:1px solid #f0d69a; }
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
