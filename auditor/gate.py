"""The gate: run the rules' checks, grade their findings, assemble the Report.

Three steps, each usable alone (the curation commands reuse them on their own findings):

- ``plan`` decides, per rule, whether its check can run on these inputs (``ran``),
  cannot because an input lacks a view the check reads (``skipped``), or could never
  fail on inputs this small (``insufficient``);
- ``run_rules`` runs the runnable checks and turns every other outcome into a note
  finding (check ``gate``), so a rule that could not run is never mistaken for one that
  passed;
- ``grade`` gives each finding its severity from the rules (weighted Bonferroni split,
  the rule's ceiling, its minimum effect), ``assemble`` sorts them and sets the status.

``evaluate`` is the three in a row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from auditor.checks import CheckSpec, registry
from auditor.rules import Rule, Rules
from auditor.types import (
    SEVERITY_ORDER,
    Batch,
    Finding,
    InputInfo,
    ModelInfo,
    Report,
    RuleOutcome,
    Severity,
    Snapshot,
    Status,
)

# The check name of the gate's own notes (a rule skipped or short of data).
GATE_CHECK = "gate"
# A note is a warning: the gate could not fail through that rule, which a reviewer must
# see, but the data itself showed nothing.  A rule's ceiling can lower it to info.
NOTE_SEVERITY: Severity = "warn"


def _less_severe(a: str, b: str) -> Severity:
    return a if SEVERITY_ORDER[a] > SEVERITY_ORDER[b] else b  # type: ignore[return-value]


def grade(finding: Finding, rule: Rule, rules: Rules) -> Finding:
    """Severity from the p-value, the rule's ceiling and its optional minimum effect.

    Fails below ``rules.fail_threshold_of(rule)`` (alpha x the rule's weight / the fail
    rules' total weight), warns below ``rules.warn_threshold_of(rule)``.

    The gate's own notes (check ``gate``) are warnings, capped by the rule's ceiling.
    """
    if finding.check == GATE_CHECK:
        return dataclasses.replace(
            finding, severity=_less_severe(NOTE_SEVERITY, rule.severity), rule=rule.name
        )
    p = finding.p_value
    severity: Severity = "info"
    if p is not None:
        if p < rules.fail_threshold_of(rule):
            severity = "fail"
        elif p < rules.warn_threshold_of(rule):
            severity = "warn"
    # the rule's severity is a ceiling: a "warn" rule never fails the gate
    severity = _less_severe(severity, rule.severity)
    if (
        severity == "fail"
        and rule.min_effect is not None
        and (finding.effect_size is None or abs(finding.effect_size) < rule.min_effect)
    ):
        severity = "warn"
    return dataclasses.replace(finding, severity=severity, rule=rule.name)


def grade_all(findings: Sequence[Finding], rules: Rules) -> list[Finding]:
    """Grade each finding by the rule named in its ``rule`` field (else the rule whose
    check made it); findings of no rule (e.g. a diff's record counts) pass unchanged."""
    by_name = {r.name: r for r in rules.rules}
    by_check = {r.check: r for r in rules.rules}
    out = []
    for f in findings:
        rule = by_name.get(f.rule) if f.rule else by_check.get(f.check)
        out.append(grade(f, rule, rules) if rule is not None else f)
    return out


def _fields(snap: Snapshot) -> str:
    return ", ".join(snap.batch.text_fields) or "none"


def _reading(batch: Any) -> tuple[Any, ...]:
    """How a side's records became text, up to naming: both read as prompt/response pairs
    (``output`` and ``instances.*.output`` or ``response`` play the same part), or the
    same fields joined as plain text."""
    if batch.prompts is not None:
        return ("pairs",)
    return ("text", tuple(f.rsplit(".", 1)[-1] for f in batch.text_fields))


def input_notes(ref: Snapshot, cur: Snapshot) -> list[Finding]:
    """Warnings about how the inputs were read, which no rule would see: the two sides
    joined different fields into their texts (the comparison then measures the reading,
    not the data), or a side holds free text in a field that was not read (its content
    was not audited at all)."""
    notes: list[Finding] = []
    a, b = ref.batch, cur.batch
    if _reading(a) != _reading(b):
        notes.append(
            Finding(
                check=GATE_CHECK,
                severity=NOTE_SEVERITY,
                summary=(
                    f"the two sides were read differently: reference text from {_fields(ref)}, "
                    f"current text from {_fields(cur)}; differences may come from the reading, "
                    "not the data (pass --text-field to read both alike)"
                ),
                side="both",
                details={
                    "outcome": "inputs",
                    "reference_fields": list(a.text_fields),
                    "current_fields": list(b.text_fields),
                },
            )
        )
    for side, batch in (("reference", a), ("current", b)):
        if batch.unread_fields:
            names = ", ".join(batch.unread_fields)
            notes.append(
                Finding(
                    check=GATE_CHECK,
                    severity=NOTE_SEVERITY,
                    summary=(
                        f"{side} records hold free text in field(s) {names} that were not read "
                        f"(text came from {', '.join(batch.text_fields) or 'none'}): that content was "
                        "not audited; name it with --text-field to include it"
                    ),
                    side=side,  # type: ignore[arg-type]
                    details={"outcome": "inputs", "unread_fields": list(batch.unread_fields)},
                )
            )
    return notes


def _outcome(rule: Rule, spec: CheckSpec, ref: Snapshot, cur: Snapshot) -> RuleOutcome:
    missing = {
        side: sorted(v for v in spec.needs - spec.optional_views if v not in snap.views)
        for side, snap in (("reference", ref), ("current", cur))
    }
    if any(missing.values()):
        lacking = [side for side, views in missing.items() if views]
        views = sorted({v for vs in missing.values() for v in vs})
        reason = (
            f"records have no prompt/response split ({' and '.join(lacking)} lack the "
            f"{'/'.join(views)} view; fields read: reference {_fields(ref)}; current {_fields(cur)})"
        )
        return RuleOutcome(rule.name, rule.check, "skipped", reason)
    short = [
        (side, len(snap))
        for side, snap in (("reference", ref), ("current", cur))
        if len(snap) < spec.min_records
    ]
    if short:
        sizes = ", ".join(f"{side} has {n}" for side, n in short)
        reason = f"insufficient data: check {rule.check} needs at least {spec.min_records} records per side ({sizes})"
        return RuleOutcome(rule.name, rule.check, "insufficient", reason)
    return RuleOutcome(rule.name, rule.check, "ran")


def plan(ref: Snapshot, cur: Snapshot, rules: Rules) -> tuple[RuleOutcome, ...]:
    """Per rule, in order: can its check run on (ref, cur), and if not, why."""
    reg = registry()
    return tuple(_outcome(rule, reg[rule.check], ref, cur) for rule in rules.rules)


def _note(outcome: RuleOutcome) -> Finding:
    if outcome.status == "skipped":
        summary = f"rule {outcome.rule} could not run: {outcome.reason}"
    else:
        summary = f"rule {outcome.rule} did not run: {outcome.reason}"
    return Finding(
        check=GATE_CHECK,
        summary=summary,
        side="both",
        rule=outcome.rule,
        details={"outcome": outcome.status, "check": outcome.check, "reason": outcome.reason},
    )


def run_rules(
    ref: Snapshot,
    cur: Snapshot,
    rules: Rules,
    *,
    seed: int,
    device: str = "auto",
    outcomes: Sequence[RuleOutcome] | None = None,
    progress: Any = None,
) -> list[Finding]:
    """Run every runnable rule's check on (ref, cur); ungraded findings, each naming its
    rule.  A rule that cannot run gives one ``gate`` note instead (see ``plan``).

    ``device`` reaches the checks that declare one (the kernel two-sample tests).
    """
    reg = registry()
    planned = tuple(outcomes) if outcomes is not None else plan(ref, cur, rules)
    findings: list[Finding] = []
    advance = progress.task("running checks", len(rules.rules)) if progress is not None else None
    for rule, outcome in zip(rules.rules, planned, strict=True):
        if outcome.status == "ran":
            spec = reg[rule.check]
            found = spec.run(ref, cur, seed=seed, params=rule.params, device=device)
            findings.extend(dataclasses.replace(f, rule=rule.name) for f in found)
        else:
            findings.append(_note(outcome))
        if advance is not None:
            advance(1)
    return findings


def status_of(findings: Sequence[Finding]) -> Status:
    """fail if any finding fails, else warn if any warns, else pass."""
    if any(f.severity == "fail" for f in findings):
        return "fail"
    return "warn" if any(f.severity == "warn" for f in findings) else "pass"


def sort_findings(findings: Sequence[Finding]) -> tuple[Finding, ...]:
    """Most severe first, then smallest p-value (missing last); stable otherwise."""
    return tuple(
        sorted(findings, key=lambda f: (SEVERITY_ORDER[f.severity], 2.0 if f.p_value is None else f.p_value))
    )


def with_rows(findings: Sequence[Finding], batches: Mapping[str, Batch]) -> list[Finding]:
    """Each finding with ``record_rows``: where its records sit in the input of its side
    (line or record number, ``Batch.lines``).  Ids not in that batch get row 0 (unknown)."""
    where = {side: dict(zip(b.ids, b.lines, strict=True)) for side, b in batches.items()}
    out = []
    for f in findings:
        rows = where.get(f.side)
        if rows is None or not f.record_ids or f.record_rows:
            out.append(f)
        else:
            out.append(dataclasses.replace(f, record_rows=tuple(rows.get(r, 0) for r in f.record_ids)))
    return out


def assemble(
    findings: Sequence[Finding],
    *,
    inputs: Mapping[str, InputInfo],
    model: ModelInfo,
    seed: int,
    rules: Rules,
    outcomes: Sequence[RuleOutcome] = (),
    batches: Mapping[str, Batch] | None = None,
) -> Report:
    """The Report of graded findings: sorted, with the status they imply.

    ``batches`` (side -> Batch) fills each finding's ``record_rows`` from its side's batch.
    """
    if batches:
        findings = with_rows(findings, batches)
    return Report(
        status=status_of(findings),
        inputs=inputs,
        model=model,
        seed=seed,
        findings=sort_findings(findings),
        rules=rules.describe(),
        outcomes=tuple(outcomes),
    )


def evaluate(
    ref: Snapshot,
    cur: Snapshot,
    rules: Rules,
    *,
    seed: int = 0,
    device: str = "auto",
    inputs: dict[str, InputInfo] | None = None,
    progress: Any = None,
) -> Report:
    """Run every rule's check on (ref, cur) and build the graded Report."""
    outcomes = plan(ref, cur, rules)
    found = run_rules(ref, cur, rules, seed=seed, device=device, outcomes=outcomes, progress=progress)
    return assemble(
        grade_all(found, rules) + input_notes(ref, cur),
        inputs=inputs or {"reference": ref.batch.info(), "current": cur.batch.info()},
        model=cur.model,
        seed=seed,
        rules=rules,
        outcomes=outcomes,
        batches={"reference": ref.batch, "current": cur.batch},
    )
