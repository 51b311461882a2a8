"""report.md: a pull-request comment (GitHub caps comments at 65,536 characters).

Layout: a status line, the inputs/model/seed line, the findings table (most severe
first), the multiple-testing note, then one folded ``<details>`` block per finding.
When the budget runs out, table rows and then detail blocks are dropped from the least
severe end and the comment says how many were left out.

Dataset text is neutralised for each context it lands in:
- markdown text (table cells, bullets, quoted examples): ``& < >`` become entities and the
  characters markdown acts on are backslash-escaped, so nothing renders as a link, image,
  emphasis, code span or table break, and no raw HTML reaches the page;
- the raw-HTML ``<summary>`` line: HTML-escaped only (backslashes would show there);
- everywhere: ``@name`` gets an invisible word joiner after the ``@`` so a model-written
  record cannot ping people from a bot's comment; control and bidi characters are removed.
"""

from __future__ import annotations

import html
import re

from auditor.report._common import (
    clean,
    compact,
    counts,
    diff_block,
    fields_line,
    fmt_num,
    fmt_p,
    ordered_findings,
    raw_p_note,
    rows_note,
    rule_label,
    rules_line,
    rules_path,
    split_details,
    testing_note,
    truncated_ids,
    why,
)
from auditor.types import Finding, Report

# ASCII punctuation that markdown (CommonMark + GFM) gives a meaning inside a line; a
# backslash makes each a literal character.  < > & are handled as entities instead.
_MD_ACTIVE = re.compile(r"([\\`*_\[\]{}|~!])")
# what only means something at the start of a line: headings, list items, setext
# underlines, thematic breaks, ordered-list numbers
_LINE_START = re.compile(r"^([#+\-=]|\d+(?=[.)]))")
_MENTION = re.compile(r"@(?=[A-Za-z0-9_])")
_WORD_JOINER = "\u2060"

_MAX_EXAMPLES = 3
_EXAMPLE_CHARS = 300
_MAX_IDS = 20
_MAX_TERMS = 12
_MAX_EVIDENCE = 12


def md_text(text: object, limit: int | None = 300) -> str:
    """Neutralise arbitrary text for an inline markdown context (one line)."""
    s = clean(text, limit, one_line=True)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_ACTIVE.sub(r"\\\1", s)
    return _MENTION.sub("@" + _WORD_JOINER, s)


def _html_text(text: object, limit: int | None = 200) -> str:
    """Neutralise text for a raw-HTML line (the <summary> of a <details> block).

    CommonMark leaves an HTML block's lines alone, so HTML escaping is what counts here;
    the markdown-active characters become numeric references as well, in case a renderer
    does parse markdown inside the block.
    """
    s = html.escape(clean(text, limit, one_line=True), quote=True)
    s = _MD_ACTIVE.sub(lambda m: f"&#{ord(m.group(1))};", s)
    return _MENTION.sub("@" + _WORD_JOINER, s)


def _quoted(text: str) -> str:
    """An example record as a block quote: each line escaped, hard line breaks kept."""
    lines = clean(text, _EXAMPLE_CHARS).split("\n")[:8]
    out = []
    for i, line in enumerate(lines):
        body = _LINE_START.sub(_escape_start, md_text(line.strip(), None)) if line.strip() else ""
        # a trailing backslash is a hard line break in CommonMark (the escaped text can
        # only end in an escaped backslash pair, so the extra one is unambiguous)
        out.append("> " + body + ("\\" if i < len(lines) - 1 and body else ""))
    return "\n".join(out)


def _escape_start(m: re.Match[str]) -> str:
    # "#" -> "\\#"; "12." -> "12\\." (the digits stay, the list marker is escaped)
    tok = m.group(1)
    return "\\" + tok if not tok.isdigit() else tok + "\\"


def _diff_block_md(report: Report) -> str:
    """A round diff reads counts first, then the unexplained change (the rest is below)."""
    block = diff_block(report)
    if block is None:
        return ""
    lines = [f"Policy: {md_text(str(block.get('policy', '')), 300)}", "", "| | records |", "|---|---:|"]
    lines += [f"| {md_text(str(label), 80)} | {int(n)} |" for label, n in block.get("rows", [])]
    unexplained = block.get("unexplained", [])
    lines += ["", "**Unexplained change:**" if unexplained else "**No unexplained change.**", ""]
    for u in unexplained:
        lines.append(
            f"- {md_text(str(u['severity']).upper(), 8)} {md_text(str(u['rule'] or u['check']), 60)} "
            f"(p={fmt_p(u['p_value'])}): {md_text(str(u['summary']), 300)}"
        )
    return "\n".join(lines) + "\n\n"


def render_markdown(report: Report, *, max_chars: int = 60000) -> str:
    """Render the report as a PR-comment sized markdown document (<= ``max_chars``)."""
    findings = ordered_findings(report)
    n = counts(report)
    head = [
        f"## auditor: {md_text(report.status.upper())}",
        "",
        f"**Status: {md_text(report.status.upper())}** \u00b7 {n['fail']} failing \u00b7 "
        f"{n['warn']} warning \u00b7 {n['info']} info finding(s)",
        "",
        _inputs_line(report),
        "",
        f"Embedded fields: {md_text(fields_line(report), 400)} \u00b7 {md_text(rules_line(report), 600)}",
        "",
    ]
    # our own sentence (no dataset text), so it needs no escaping
    note = f"_{testing_note(report)}_"
    # room kept for the closing note(s) whatever happens to the budget below
    reserve = len(note) + 400
    text = "\n".join(head) + "\n" + _diff_block_md(report)

    if not findings:
        return text + "\nNo findings.\n\n" + note + "\n"

    table_head = [
        "| # | Severity | Rule / check | Side | Summary | Statistic | p-value | Records |",
        "|---:|---|---|---|---|---:|---:|---:|",
    ]
    rows = []
    table_budget = max(0, (max_chars - reserve) // 2 - len(text))
    used = sum(len(r) + 1 for r in table_head)
    for i, f in enumerate(findings, 1):
        row = _row(i, f)
        if used + len(row) + 1 > table_budget:
            break
        rows.append(row)
        used += len(row) + 1
    text += "\n".join(table_head + rows) + "\n"
    if len(rows) < len(findings):
        text += f"\n_{len(findings) - len(rows)} more finding(s) not shown in this table; see report.json._\n"
    text += "\n" + note + "\n"

    blocks = []
    budget = max_chars - reserve - len(text)
    for i, f in enumerate(findings, 1):
        block = _details_block(i, f)
        if len(block) + 1 > budget:
            break
        blocks.append(block)
        budget -= len(block) + 1
    if blocks:
        text += "\n### Details\n\n" + "\n".join(blocks)
    if len(blocks) < len(findings):
        text += (
            f"\n_Details of {len(findings) - len(blocks)} finding(s) left out to fit a comment; "
            "see report.json or report.html._\n"
        )
    return text


def _inputs_line(report: Report) -> str:
    parts = []
    for name in sorted(report.inputs, key=lambda k: (k != "reference", k != "current", k)):
        info = report.inputs[name]
        parts.append(
            f"{md_text(name.capitalize())}: {md_text(info.path, 120)} "
            f"({info.n_records} records, sha256 {md_text(info.sha256[:12])})"
        )
    parts.append(f"Model: {md_text(report.model.name, 80)} ({md_text(report.model.sha256[:12])})")
    parts.append(f"Seed: {report.seed}")
    path = rules_path(report)
    if path:
        parts.append(f"Rules: {md_text(path, 120)}")
    return " \u00b7 ".join(parts)


def _row(i: int, f: Finding) -> str:
    cells = [
        str(i),
        f"**{f.severity.upper()}**" if f.severity != "info" else "info",
        md_text(rule_label(f), 80),
        f.side,
        md_text(f.summary, 200),
        fmt_num(f.statistic),
        fmt_p(f.p_value),
        str(len(f.record_ids)),
    ]
    return "| " + " | ".join(cells) + " |"


def _details_block(i: int, f: Finding) -> str:
    terms, examples, evidence = split_details(f.details)
    lines = [
        "<details>",
        f"<summary>#{i} {html.escape(f.severity.upper())} {_html_text(rule_label(f), 80)}: "
        f"{_html_text(f.summary)}</summary>",
        "",
        *([f"_{md_text(why(f), None)}_", ""] if why(f) else []),
        f"- check: {md_text(f.check, 80)}; rule: {md_text(f.rule or f.check, 80)}; side: {f.side}",
        f"- statistic: {fmt_num(f.statistic)}; p-value: {fmt_p(f.p_value)}"
        + raw_p_note(f)
        + f"; effect size: {fmt_num(f.effect_size)}",
    ]
    for key in list(evidence)[:_MAX_EVIDENCE]:
        lines.append(f"- {md_text(key, 60)}: {md_text(compact(evidence[key]), None)}")
    if len(evidence) > _MAX_EVIDENCE:
        lines.append(f"- ... and {len(evidence) - _MAX_EVIDENCE} more evidence field(s) in report.json")
    if terms:
        shown = ", ".join(md_text(t, 60) for t in terms[:_MAX_TERMS])
        more = f" ... and {len(terms) - _MAX_TERMS} more" if len(terms) > _MAX_TERMS else ""
        lines.append(f"- top terms: {shown}{more}")
    ids, left = truncated_ids(f.record_ids, _MAX_IDS)
    if ids:
        more = f" ... and {left} more" if left else ""
        lines.append(
            f"- records ({len(f.record_ids)}, {f.side}): {', '.join(md_text(x, 80) for x in ids)}{more}"
        )
    if rows_note(f):
        lines.append(f"- where in the {f.side} input: {md_text(rows_note(f, _MAX_IDS), None)}")
    if examples:
        # a paragraph (not a list item) first, so the quotes below cannot be read as a
        # continuation of the list above
        lines += ["", "Examples:", ""]
        for rid, ex in examples[:_MAX_EXAMPLES]:
            if rid is not None:
                lines += [f"Record {md_text(rid, 80)}:", ""]
            lines += [_quoted(ex), ""]
    lines += ["", "</details>", ""]
    return "\n".join(lines)

