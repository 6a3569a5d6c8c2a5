"""The report's text: numbers as short strings, and escaped HTML tables and sections.

>>> fmt(3.14159265), with_error(2.0, 0.0125)
('3.142', '2 ± 0.0125')
>>> html_table(("name", "value"), [("<k>", 1)])
'<table><thead><tr><th>name</th><th>value</th></tr></thead><tbody><tr><td>&lt;k&gt;</td><td>1</td></tr></tbody></table>'
"""

from __future__ import annotations

import html
import math

import numpy as np


def fmt(value) -> str:
    """A number in at most 4 significant digits; ``None`` as a dash."""
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    return "nan" if math.isnan(value) else f"{value:.4g}"


def with_error(value, error) -> str:
    """``value ± error`` (the error to 3 digits), or ``value`` alone without an error."""
    if error is None:
        return fmt(value)
    return f"{fmt(value)} ± {float(error):.3g}"


def html_table(header, rows, caption="") -> str:
    """A table of escaped cells under an escaped header and caption."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_section(anchor, heading, body) -> str:
    """A ``<section>`` with id ``anchor`` (for the navigation) and an escaped heading."""
    return (f'<section id="{anchor}"><h2>{html.escape(heading)}</h2>\n{body}\n</section>')
