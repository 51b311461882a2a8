"""JUnit XML, so CI systems (GitHub test reporters, GitLab, Jenkins) show failures natively.

One ``<testcase classname="auditor.rules" name=RULE>`` per rule that ran.  By default a
rule gets one ``<failure>`` per failing finding, its ``message`` the finding's summary,
so each selected topic or phrase shows as its own failure.  JUnit readers disagree about
several ``<failure>`` elements in one test case (Jenkins keeps only the first, GitLab
turns them into an array); ``failure_per_finding=False`` emits exactly one per test
case, its message the most significant summary and its text every failing finding.  Warnings and info findings go
to ``<system-out>``: they do not fail the gate.  A rule whose check did not run (its
inputs lack the prompt/response split it reads, or are too small for it ever to fail;
``Report.outcomes``) gets ``<skipped message=REASON>``: never shown as passed.

ElementTree escapes ``& < > "`` itself; characters XML 1.0 cannot carry at all (most
C0 controls) are removed first, since a model-written record may contain them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from auditor.report._common import (
    clean,
    fmt_num,
    fmt_p,
    ordered_findings,
    rule_names,
    testing_note,
    truncated_ids,
    xml_safe,
)
from auditor.types import Finding, Report

_MESSAGE_CHARS = 500
_MAX_IDS = 50


def _finding_text(f: Finding) -> str:
    ids, left = truncated_ids(f.record_ids, _MAX_IDS)
    more = f" ... and {left} more" if left else ""
    records = f"  records: {', '.join(ids)}{more}\n" if ids else ""
    return (
        f"[{f.severity.upper()}] {clean(f.summary, 1000, one_line=True)}\n"
        f"  check={f.check} side={f.side} statistic={fmt_num(f.statistic)} "
        f"p_value={fmt_p(f.p_value)} effect_size={fmt_num(f.effect_size)} "
        f"n_records={len(f.record_ids)}\n" + records
    )


def render_junit(report: Report, *, failure_per_finding: bool = True) -> str:
    """Render the report as a JUnit XML document (UTF-8, with XML declaration)."""
    findings = ordered_findings(report)
    by_rule: dict[str, list[Finding]] = {}
    for f in findings:
        by_rule.setdefault(f.rule or f.check, []).append(f)
    names = rule_names(report)

    not_run = {o.rule: o for o in report.outcomes if o.status != "ran"}
    n_failed = sum(1 for name in names if any(f.severity == "fail" for f in by_rule.get(name, [])))
    attrs = {"tests": str(len(names)), "failures": str(n_failed), "errors": "0", "time": "0"}
    root = ET.Element("testsuites", {"name": "auditor", **attrs})
    suite = ET.SubElement(root, "testsuite", {"name": "auditor", "skipped": str(len(not_run)), **attrs})

    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("status", report.status),
        ("seed", str(report.seed)),
        ("model", f"{report.model.name} {report.model.sha256[:12]}"),
        *((f"input.{k}", f"{v.path} ({v.n_records} records)") for k, v in sorted(report.inputs.items())),
        ("multiple_testing", testing_note(report)),
    ):
        ET.SubElement(props, "property", {"name": xml_safe(key), "value": xml_safe(clean(value, 500))})

    for name in names:
        case = ET.SubElement(
            suite, "testcase", {"classname": "auditor.rules", "name": xml_safe(name), "time": "0"}
        )
        mine = by_rule.get(name, [])
        if name in not_run:
            outcome = not_run[name]
            ET.SubElement(case, "skipped", {"message": _message(f"{outcome.status}: {outcome.reason}")})
        fails = [f for f in mine if f.severity == "fail"]
        if fails and failure_per_finding:
            for f in fails:
                el = ET.SubElement(case, "failure", {"message": _message(f.summary), "type": f.check})
                el.text = xml_safe(_finding_text(f))
        elif fails:
            message = fails[0].summary
            if len(fails) > 1:
                message = f"{len(fails)} failing findings; first: {message}"
            el = ET.SubElement(case, "failure", {"message": _message(message), "type": fails[0].check})
            el.text = xml_safe("\n".join(_finding_text(f) for f in fails))
        others = [f for f in mine if f.severity != "fail"]
        if others:
            out = ET.SubElement(case, "system-out")
            out.text = xml_safe("\n".join(_finding_text(f) for f in others))

    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _message(text: str) -> str:
    return xml_safe(clean(text, _MESSAGE_CHARS, one_line=True))
