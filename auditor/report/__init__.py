"""Renderers: the same Report as JSON, markdown (PR comment), HTML, JUnit XML and a
terminal table.  Dataset text is adversarial; each renderer escapes it for its format.

Importing this package is light: faiss (k-means for the HTML cluster chart) is imported
only when ``render_html`` runs.
"""

from __future__ import annotations

from auditor.report.html import render_html
from auditor.report.json import to_json, write_reports, write_text_atomic
from auditor.report.junit import render_junit
from auditor.report.markdown import render_markdown
from auditor.report.terminal import render_terminal

__all__ = [
    "render_html",
    "render_junit",
    "render_markdown",
    "render_terminal",
    "to_json",
    "write_reports",
    "write_text_atomic",
]
