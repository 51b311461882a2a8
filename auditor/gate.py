"""Run the rules' checks and grade their findings into a Report."""

from __future__ import annotations

import dataclasses
from typing import Any

from auditor.checks import registry
from auditor.rules import Rule, Rules
from auditor.types import Finding, InputInfo, Report, Severity, Snapshot, Status

_ORDER = {"fail": 0, "warn": 1, "info": 2}


def grade(finding: Finding, rule: Rule, rules: Rules) -> Finding:
    """Severity from the p-value, the rule's ceiling and its optional minimum effect."""
    p = finding.p_value
    severity: Severity = "info"
    if p is not None:
        if p < rules.fail_threshold:
            severity = "fail"
        elif p < rules.warn_threshold:
            severity = "warn"
    # the rule's severity is a ceiling: a "warn" rule never fails the gate
    if _ORDER[severity] < _ORDER[rule.severity]:
        severity = rule.severity  # type: ignore[assignment]  # validated in rules.py
    if (
        severity == "fail"
        and rule.min_effect is not None
        and (finding.effect_size is None or abs(finding.effect_size) < rule.min_effect)
    ):
        severity = "warn"
    return dataclasses.replace(finding, severity=severity, rule=rule.name)


def evaluate(
    ref: Snapshot,
    cur: Snapshot,
    rules: Rules,
    *,
    seed: int = 0,
    inputs: dict[str, InputInfo] | None = None,
    progress: Any = None,
) -> Report:
    """Run every rule's check on (ref, cur) and build the graded Report."""
    reg = registry()
    findings: list[Finding] = []
    advance = progress.task("running checks", len(rules.rules)) if progress is not None else None
    for rule in rules.rules:
        spec = reg[rule.check]
        for f in spec.run(ref, cur, seed=seed, params=rule.params):
            findings.append(grade(f, rule, rules))
        if advance is not None:
            advance(1)
    findings.sort(key=lambda f: (_ORDER[f.severity], f.p_value if f.p_value is not None else 2.0))
    status: Status = "pass"
    if any(f.severity == "fail" for f in findings):
        status = "fail"
    elif any(f.severity == "warn" for f in findings):
        status = "warn"
    return Report(
        status=status,
        inputs=inputs or {"reference": ref.batch.info(), "current": cur.batch.info()},
        model=cur.model,
        seed=seed,
        findings=tuple(findings),
        rules=rules.describe(),
    )
