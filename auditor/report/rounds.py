"""Markdown for curation rounds: the pull-request comment of ``auditor diff`` (diff.md).

Renders what ``auditor.curation.diff`` computed; computes nothing itself.  Dataset text is
adversarial (a model wrote it): every text, id and round name goes through ``md_text``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from auditor.report._common import fmt_p
from auditor.report.markdown import md_text
from auditor.rounds import EXAMPLE_CHARS, RecordDiff
from auditor.types import Report, Snapshot

if TYPE_CHECKING:
    from auditor.curation import DiffResult


def diff_markdown(
    report: Report,
    diff: RecordDiff,
    a: Snapshot,
    b: Snapshot,
    *,
    a_name: str,
    b_name: str,
    clusters: Sequence[Mapping[str, Any]] = (),
    max_examples: int = 5,
    max_clusters: int = 15,
) -> str:
    """A reviewer's view of what round B changed relative to round A (GitHub markdown).

    Dataset text is escaped with the report renderer's ``md_text`` (the data is
    adversarial); the findings table follows the report's severity order.
    """
    icon = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}[report.status]
    rec = next((f for f in report.findings if f.check == "round_records"), None)
    att: Mapping[str, Any] = rec.details.get("attribution", {}) if rec is not None else {}
    lines = [
        f"## auditor diff: {md_text(a_name, 80)} \u2192 {md_text(b_name, 80)} \u2014 **{icon}**",
        "",
    ]
    if att:
        lines += [f"Policy {md_text(att['policy']['text'], 300)}", ""]
    lines += [
        "| | records |",
        "|---|---:|",
        f"| in {md_text(a_name, 80)} | {len(a)} |",
        f"| in {md_text(b_name, 80)} | {len(b)} |",
        f"| kept (same content) | {len(diff.kept_a)} |",
        f"| added | {len(diff.added)} |",
        f"| removed | {len(diff.removed)} |",
    ]
    block: Mapping[str, Any] = rec.details.get("diff_block", {}) if rec is not None else {}
    # the per-reason rows come ready from the library (auditor.curation.diff_block)
    for label, n in block.get("rows", []):
        if ":" in str(label) and (n or str(label).endswith("unexplained")):
            lines.append(f"| \u2003{md_text(str(label), 80)} | {int(n)} |")
    lines += [f"| kept but re-ided | {diff.reided} |", ""]
    tested = [f for f in report.findings if f.check != "round_records"]
    failing = block.get("unexplained", [])
    if failing:
        lines += ["### Unexplained change", "", "| severity | check | p | summary |", "|---|---|---:|---|"]
        for u in failing:
            lines.append(
                f"| {md_text(str(u['severity']), 8)} | {md_text(str(u['rule'] or u['check']), 60)} | "
                f"{fmt_p(u['p_value'])} | {md_text(str(u['summary']), 300)} |"
            )
        lines.append("")
    else:
        lines += ["No unexplained change: every test passed.", ""]
    if tested:
        lines += ["<details><summary>All tests</summary>", "", "| severity | check | p | summary |", "|---|---|---:|---|"]
        for f in tested:
            lines.append(
                f"| {f.severity} | {md_text(f.rule or f.check, 60)} | {fmt_p(f.p_value)} | {md_text(f.summary, 300)} |"
            )
        lines += ["", md_text(report.rules.get("multiple_testing", ""), 600), "", "</details>", ""]
    removed_rows = att.get("removed", []) if att else []
    if removed_rows:
        lines += [
            f"<details><summary>Removed records and what explains them (first {min(len(removed_rows), 50)})</summary>",
            "",
            "| id | reason | kept match | cosine | token Jaccard |",
            "|---|---|---|---:|---:|",
        ]
        for r in removed_rows[:50]:
            cos = "" if r.get("cosine") is None else f"{float(r['cosine']):.3f}"
            jac = "" if r.get("jaccard") is None else f"{float(r['jaccard']):.2f}"
            lines.append(
                f"| {md_text(str(r['id']), 40)} | {md_text(str(r['reason']), 40)} | "
                f"{md_text(str(r.get('match_id') or ''), 40)} | {cos} | {jac} |"
            )
        lines += ["", "</details>", ""]
    moved = sorted(clusters, key=lambda r: -abs(float(r["share_b"]) - float(r["share_a"])))[:max_clusters]
    if moved:
        lines += [
            "<details><summary>Basis clusters with the largest share change</summary>",
            "",
            f"| cluster | {md_text(a_name, 40)} | {md_text(b_name, 40)} | change |",
            "|---:|---:|---:|---:|",
        ]
        for r in moved:
            delta = float(r["share_b"]) - float(r["share_a"])
            lines.append(
                f"| {int(r['cluster'])} | {float(r['share_a']):.1%} ({int(r['n_a'])}) | "
                f"{float(r['share_b']):.1%} ({int(r['n_b'])}) | {delta:+.1%} |"
            )
        lines += ["", "</details>", ""]
    for title, snap, idx in (("Added", b, diff.added), ("Removed", a, diff.removed)):
        if not idx:
            continue
        lines += [f"<details><summary>{title} (first {min(max_examples, len(idx))} of {len(idx)})</summary>", ""]
        for i in idx[:max_examples]:
            lines.append(f"- **{md_text(snap.ids[i], 40)}**: {md_text(snap.texts[i], EXAMPLE_CHARS)}")
        lines += ["", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def render_diff(result: DiffResult, *, max_examples: int = 5, max_clusters: int = 15) -> str:
    """``diff_markdown`` of an ``auditor.curation.DiffResult``."""
    return diff_markdown(
        result.report,
        result.records,
        result.reference,
        result.current,
        a_name=result.a_name,
        b_name=result.b_name,
        clusters=result.clusters,
        max_examples=max_examples,
        max_clusters=max_clusters,
    )
