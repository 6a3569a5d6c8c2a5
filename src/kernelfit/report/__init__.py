"""``report``: the HTML report of a fit and its figures.

Rule: it renders any fit-like object (duck typing), so it imports ``core`` and ``io`` only.
"""

from .html import check_report_path, compact_html, render_report, require_matplotlib, write_report

__all__ = ["check_report_path", "compact_html", "render_report", "require_matplotlib",
           "write_report"]
