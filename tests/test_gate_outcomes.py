"""The gate says when a rule could not run (issue 10 item 3): skipped and insufficient-data
rules are never reported as passed, in report.json or in JUnit."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from auditor import kernels
from auditor.api import run_audit
from auditor.gate import GATE_CHECK, assemble, evaluate, grade_all, plan, run_rules
from auditor.report import render_junit, to_json
from auditor.rules import load_rules, parse_rules
from auditor.textutil import batch_from_texts
from auditor.types import SEVERITY_ORDER, Finding, Report, RuleOutcome
from tests.fakes import FakeEncoder, fake_snapshot
from tests.helpers import alpaca_records

ENC = FakeEncoder()


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _alpaca(lo: int, hi: int) -> list[dict[str, str]]:
    return [dict(r) for r in alpaca_records()[lo:hi]]


def _as_text(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The same records with no prompt/response split: one "text" field each."""
    return [{"text": "\n".join(p for p in (r["instruction"], r["input"], r["output"]) if p)} for r in rows]


FLIPS_AND_MMD = {
    "rules": [
        {"name": "drift", "check": "mmd", "params": {"permutations": 199}},
        {"name": "flipped-responses", "check": "flipped_responses"},
    ]
}


def test_text_only_records_skip_flipped_responses_and_say_so(tmp_path: Path) -> None:
    """Attack: the poisoned batch written as {"text": ...} switched flipped_responses off
    and JUnit showed the rule as passed."""
    rules = parse_rules(FLIPS_AND_MMD, "r.yaml")
    ref = _write_jsonl(tmp_path / "ref.jsonl", _as_text(_alpaca(0, 60)))
    cur = _write_jsonl(tmp_path / "cur.jsonl", _as_text(_alpaca(60, 120)))
    report = run_audit(cur, ref, rules=rules, encoder=ENC, cache_dir=None).report

    outcomes = {o.rule: o for o in report.outcomes}
    assert outcomes["drift"].status == "ran"
    skipped = outcomes["flipped-responses"]
    assert skipped.status == "skipped" and "no prompt/response split" in skipped.reason
    assert "fields read" in skipped.reason and "text" in skipped.reason

    notes = [f for f in report.findings if f.check == GATE_CHECK]
    assert len(notes) == 1
    note = notes[0]
    assert note.severity == "warn" and note.side == "both" and note.rule == "flipped-responses"
    assert note.summary.startswith(
        "rule flipped-responses could not run: records have no prompt/response split"
    )
    assert report.status == "warn" and report.exit_code == 0  # a note never fails the gate

    d = json.loads(to_json(report))
    assert {"rule": "flipped-responses", "check": "flipped_responses", "status": "skipped"}.items() <= d[
        "outcomes"
    ][1].items()
    assert Report.from_dict(d).to_dict() == d

    suite = ET.fromstring(render_junit(report)).find("testsuite")
    assert suite is not None and suite.get("skipped") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    flips = cases["flipped-responses"]
    skip = flips.find("skipped")
    assert skip is not None and "no prompt/response split" in (skip.get("message") or "")
    assert flips.find("failure") is None
    assert cases["drift"].find("skipped") is None


def test_the_same_records_with_a_split_run_the_rule(tmp_path: Path) -> None:
    rules = parse_rules(FLIPS_AND_MMD, "r.yaml")
    ref = _write_jsonl(tmp_path / "ref.jsonl", _alpaca(0, 60))
    cur = _write_jsonl(tmp_path / "cur.jsonl", _alpaca(60, 120))
    report = run_audit(cur, ref, rules=rules, encoder=ENC, cache_dir=None).report
    assert [o.status for o in report.outcomes] == ["ran", "ran"]
    assert not [f for f in report.findings if f.check == GATE_CHECK]
    assert ET.fromstring(render_junit(report)).find("testsuite").get("skipped") == "0"  # type: ignore[union-attr]


def test_one_side_with_a_split_is_still_skipped() -> None:
    rules = parse_rules(FLIPS_AND_MMD, "r.yaml")
    rows = _alpaca(0, 40)
    with_split = batch_from_texts(
        [r["instruction"] + "\n" + r["output"] for r in rows],
        prompts=[r["instruction"] for r in rows],
        responses=[r["output"] for r in rows],
    )
    ref = fake_snapshot(with_split, ENC, views=("prompt", "response"))
    cur = fake_snapshot(
        batch_from_texts([r["instruction"] + "\n" + r["output"] for r in _alpaca(40, 80)]), ENC
    )
    outcome = plan(ref, cur, rules)[1]
    assert outcome.status == "skipped" and "current lack" in outcome.reason


def test_default_rules_skip_only_the_rule_that_needs_a_split(tmp_path: Path) -> None:
    ref = _write_jsonl(tmp_path / "ref.jsonl", _as_text(_alpaca(0, 60)))
    cur = _write_jsonl(tmp_path / "cur.jsonl", _as_text(_alpaca(60, 120)))
    report = run_audit(cur, ref, encoder=ENC, cache_dir=None).report
    defaults = load_rules(None)
    needing = {r.name for r in defaults.rules if r.check == "flipped_responses"}
    skipped = {o.rule for o in report.outcomes if o.status == "skipped"}
    # near_duplicates uses the response view when there is one and runs without it
    assert skipped == needing
    assert len(report.outcomes) == len(defaults.rules)
    for name in skipped:
        note = next(f for f in report.findings if f.check == GATE_CHECK and f.rule == name)
        assert note.severity == "warn" and note.summary.startswith(f"rule {name} could not run")


@pytest.mark.parametrize("side", ["reference", "current", "both"])
def test_one_record_sides_are_insufficient_not_silent(tmp_path: Path, side: str) -> None:
    """Attack: a 1-record reference or current passed with six rules producing nothing."""
    big, one = _alpaca(0, 60), _alpaca(60, 61)
    ref_rows = one if side in ("reference", "both") else big
    cur_rows = one if side in ("current", "both") else _alpaca(100, 160)
    ref = _write_jsonl(tmp_path / "ref.jsonl", ref_rows)
    cur = _write_jsonl(tmp_path / "cur.jsonl", cur_rows)
    report = run_audit(cur, ref, encoder=ENC, cache_dir=None).report
    defaults = load_rules(None)
    assert report.status != "pass"
    assert [o.status for o in report.outcomes] == ["insufficient"] * len(defaults.rules)
    notes = {f.rule: f for f in report.findings if f.check == GATE_CHECK}
    assert set(notes) == {r.name for r in defaults.rules}
    for rule in defaults.rules:
        note = notes[rule.name]
        assert note.severity == "warn"
        assert f"rule {rule.name} did not run: insufficient data" in note.summary
        assert "needs at least" in note.summary and "has 1" in note.summary
    suite = ET.fromstring(render_junit(report)).find("testsuite")
    assert suite is not None and suite.get("skipped") == str(len(defaults.rules))


def test_a_note_is_capped_by_the_rules_ceiling() -> None:
    rules = parse_rules({"rules": [{"check": "mmd", "severity": "info"}]}, "r.yaml")
    ref = fake_snapshot(batch_from_texts(["only one"]), ENC)
    cur = fake_snapshot(batch_from_texts(["a", "b", "c"]), ENC)
    report = evaluate(ref, cur, rules, seed=0)
    assert report.outcomes[0].status == "insufficient"
    assert [f.severity for f in report.findings] == ["info"] and report.status == "pass"


def test_run_grade_assemble_compose_to_evaluate() -> None:
    rules = parse_rules({"rules": [{"check": "mmd", "params": {"permutations": 499}}]}, "r.yaml")
    ref = fake_snapshot(batch_from_texts([r["instruction"] for r in _alpaca(0, 50)]), ENC)
    cur = fake_snapshot(batch_from_texts([r["output"] for r in _alpaca(0, 50)]), ENC)
    outcomes = plan(ref, cur, rules)
    raw = run_rules(ref, cur, rules, seed=1, device="cpu", outcomes=outcomes)
    assert raw and all(f.severity == "info" and f.rule == "mmd" for f in raw)
    graded = grade_all(raw, rules)
    report = assemble(
        graded,
        inputs={"reference": ref.batch.info(), "current": cur.batch.info()},
        model=cur.model,
        seed=1,
        rules=rules,
        outcomes=outcomes,
    )
    assert report.to_dict() == evaluate(ref, cur, rules, seed=1, device="cpu").to_dict()
    assert report.status == "fail"


def test_findings_sort_by_the_one_severity_order() -> None:
    rules = parse_rules({"rules": [{"check": "mmd"}]}, "r.yaml")
    fs = [
        Finding(check="x", summary="i", side="current", severity="info"),
        Finding(check="x", summary="w", side="current", severity="warn", p_value=0.2),
        Finding(check="x", summary="f", side="current", severity="fail", p_value=0.001),
        Finding(check="x", summary="w0", side="current", severity="warn", p_value=0.01),
    ]
    report = assemble(fs, inputs={}, model=ENC.info, seed=0, rules=rules)
    assert [f.summary for f in report.findings] == ["f", "w0", "w", "i"]
    assert list(SEVERITY_ORDER) == ["fail", "warn", "info"]


def test_device_reaches_the_checks_when_the_caller_brings_its_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_audit(encoder=..., device=...) used to drop the device for MMD."""
    seen: list[str] = []

    def spy(device: str = "auto") -> str:
        seen.append(device)
        return "cpu"

    monkeypatch.setattr(kernels, "resolve_device", spy)
    rules = parse_rules({"rules": [{"check": "mmd", "params": {"permutations": 99}}]}, "r.yaml")
    ref = _write_jsonl(tmp_path / "ref.jsonl", _alpaca(0, 30))
    cur = _write_jsonl(tmp_path / "cur.jsonl", _alpaca(30, 60))
    run_audit(cur, ref, rules=rules, encoder=ENC, cache_dir=None, device="cuda:3")
    assert seen == ["cuda:3"]


def test_outcome_status_is_validated() -> None:
    with pytest.raises(ValueError):
        RuleOutcome("r", "mmd", "passed")  # type: ignore[arg-type]
