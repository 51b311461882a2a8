"""The summary table printed at the end of a run (rich).

Two layouts: on a terminal, a table sized to it; anywhere else (a CI log, a pipe, a
file) one plain line per finding that never wraps into the next, so a log reads line by
line and ``grep FAIL`` finds every failing finding.

Colour follows the console: rich's ``Console`` turns colour off by itself when ``NO_COLOR``
is set (https://no-color.org) or when output is not a terminal, so nothing here checks the
environment.  Dataset text goes into ``rich.text.Text`` objects, never into markup
strings, so ``[link=...]`` or ``[bold]`` in a record is printed, not interpreted; escape
sequences and other control characters are stripped before they reach the terminal.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from auditor.report._common import (
    clean,
    counts,
    fmt_p,
    ordered_findings,
    testing_note,
)
from auditor.types import Report

SEVERITY_STYLE = {"fail": "bold red", "warn": "yellow", "info": "dim"}
STATUS_STYLE = {"fail": "bold white on red", "warn": "bold black on yellow", "pass": "bold white on green"}


def render_terminal(report: Report, console: Console, *, max_rows: int = 40) -> None:
    """Print the findings table (most severe first) and a one-line verdict to ``console``.

    Every failing and warning finding is listed; info findings fill the table up to
    ``max_rows`` rows and the rest are counted in a closing line.
    """
    findings = ordered_findings(report)
    n = counts(report)
    if not console.is_terminal:
        _render_lines(report, console, max_rows=max_rows)
        return
    if findings:
        # the summary gets the width: statistic and side are in report.json and report.md
        table = Table(title="auditor findings", title_justify="left", show_lines=False, expand=True)
        table.add_column("Severity", no_wrap=True)
        table.add_column("Rule", overflow="ellipsis", no_wrap=True, max_width=24)
        table.add_column("p-value", justify="right", no_wrap=True)
        table.add_column("Records", justify="right", no_wrap=True)
        table.add_column("Summary", overflow="fold", ratio=1)
        shown = 0
        for f in findings:
            if f.severity == "info" and shown >= max_rows:
                break
            style = SEVERITY_STYLE.get(f.severity, "")
            table.add_row(
                Text(f.severity.upper(), style=style),
                Text(clean(f.rule or f.check, 80, one_line=True)),
                Text(fmt_p(f.p_value)),
                Text(f"{len(f.record_ids)} {f.side[:3]}" if f.record_ids else "-"),
                Text(clean(f.summary, 300, one_line=True)),
            )
            shown += 1
        console.print(table)
        if shown < len(findings):
            console.print(
                Text(f"... and {len(findings) - shown} more info finding(s) in report.json", style="dim")
            )
        console.print(Text(testing_note(report), style="dim"))

    verdict = Text()
    verdict.append(f" {report.status.upper()} ", style=STATUS_STYLE.get(report.status, "bold"))
    verdict.append(
        f"  {n['fail']} failing, {n['warn']} warning, {n['info']} info finding(s); seed {report.seed}"
    )
    console.print(verdict)


def render_lines(report: Report, *, max_rows: int = 40) -> list[str]:
    """The plain layout: one line per finding (most severe first), then the testing note
    and the verdict.  Dataset text is cleaned and folded to one line."""
    findings = ordered_findings(report)
    n = counts(report)
    out = []
    shown = 0
    for i, f in enumerate(findings, 1):
        if f.severity == "info" and shown >= max_rows:
            break
        where = ""
        if f.record_ids:
            where = f" records={len(f.record_ids)} {f.side}"
            if f.record_rows:
                rows = ",".join(str(r) for r in f.record_rows[:5]) + ("..." if len(f.record_rows) > 5 else "")
                where += f" rows={rows}"
        out.append(
            f"{f.severity.upper():<4} #{i} {clean(f.rule or f.check, 60, one_line=True)} "
            f"p={fmt_p(f.p_value)}{where}: {clean(f.summary, 300, one_line=True)}"
        )
        shown += 1
    if shown < len(findings):
        out.append(f"... and {len(findings) - shown} more info finding(s) in report.json")
    if findings:
        out.append(testing_note(report))
    out.append(
        f"{report.status.upper()}: {n['fail']} failing, {n['warn']} warning, {n['info']} info finding(s); "
        f"seed {report.seed}"
    )
    return out


def _render_lines(report: Report, console: Console, *, max_rows: int) -> None:
    style = {"FAIL": "bold red", "WARN": "yellow"}
    for line in render_lines(report, max_rows=max_rows):
        # Text, not markup: the line holds dataset text; soft_wrap: never folded by rich
        console.print(Text(line, style=style.get(line[:4], "")), soft_wrap=True, overflow="ignore", crop=False)
