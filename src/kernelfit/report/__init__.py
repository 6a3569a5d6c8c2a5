"""``report``: the HTML report of a fit and its figures.

The page and its public functions (:mod:`~kernelfit.report.html`), its sections
(:mod:`~kernelfit.report.sections`), the figures drawn with matplotlib
(:mod:`~kernelfit.report.figures`), numbers and tables as text
(:mod:`~kernelfit.report.format`), and the inputs checked against the fit
(:mod:`~kernelfit.report.inputs`).

Rule: it renders any fit-like object (duck typing), so it imports ``core`` and ``io`` only.
"""

from .html import check_report_path, compact_html, render_report, require_matplotlib, write_report

__all__ = ["check_report_path", "compact_html", "render_report", "require_matplotlib",
           "write_report"]
