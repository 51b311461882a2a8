"""report.json and the atomic writing of every report file.

``to_json`` is the versioned contract (``Report.to_dict``) with sorted keys, so two runs
with the same inputs and seed produce byte-identical files that diff cleanly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from auditor.fsutil import write_text_atomic
from auditor.types import Report, Snapshot


def to_json(report: Report) -> str:
    """The report as JSON: keys sorted, indent 2, trailing newline, UTF-8 text kept as is."""
    # default=str is a last resort for a non-JSON value a rule file put into report.rules
    # (a Path, a date): the report must still be written, and the value stays readable.
    data = report.to_dict()
    text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # a lone surrogate from the data (JSON input may carry "\ud800") cannot be written
        # as UTF-8; \u escapes keep the exact value and a valid file
        text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False, default=str)
    return text + "\n"


def write_reports(
    report: Report,
    out_dir: str | os.PathLike[str],
    *,
    ref: Snapshot | None = None,
    cur: Snapshot | None = None,
    html: bool = False,
) -> dict[str, Path]:
    """Write report.json and report.md (and report.html when ``html``; it then needs both
    snapshots) into ``out_dir``, each atomically.  Returns ``{"json"|"md"|"html": path}``.

    Every renderer runs before the first file is replaced, so a renderer error leaves the
    previous set of reports untouched rather than a mix of old and new.
    """
    from auditor.report.markdown import render_markdown

    out = Path(out_dir)
    texts: dict[str, tuple[str, str]] = {
        "json": ("report.json", to_json(report)),
        "md": ("report.md", render_markdown(report)),
    }
    if html:
        if ref is None or cur is None:
            # a programming error, not a user one: the caller asked for HTML and gave
            # nothing to draw; failing loudly beats silently dropping the file
            raise ValueError("write_reports(html=True) needs both ref and cur snapshots")
        from auditor.report.html import render_html

        texts["html"] = ("report.html", render_html(report, ref, cur))
    return {key: write_text_atomic(out / name, text) for key, (name, text) in texts.items()}
