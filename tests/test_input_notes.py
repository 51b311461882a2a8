"""How the inputs were read is part of the verdict (issue 10 item 3): a field of free text
that was not read, or two sides read from different fields, is a warning in the report,
never silence."""

from __future__ import annotations

import json
from pathlib import Path

from auditor.api import run_audit
from auditor.gate import GATE_CHECK
from auditor.io import load
from auditor.rules import parse_rules
from tests.fakes import FakeEncoder
from tests.helpers import alpaca_records, data

ENC = FakeEncoder()
MMD_ONLY = parse_rules({"rules": [{"name": "mmd", "check": "mmd", "severity": "fail"}]}, "test.yaml")


def _jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(lo: int, hi: int, rename: dict[str, str] | None = None) -> list[dict[str, str]]:
    out = []
    for r in alpaca_records()[lo:hi]:
        out.append({(rename or {}).get(k, k): v for k, v in r.items()})
    return out


def _notes(report) -> list:  # type: ignore[no-untyped-def]
    return [f for f in report.findings if f.check == GATE_CHECK and f.details.get("outcome") == "inputs"]


def test_renamed_answer_field_is_reported_unread(tmp_path: Path) -> None:
    # the attack: 'output' renamed to 'answer' drops the answers from the audit unseen
    ref = _jsonl(tmp_path / "ref.jsonl", _rows(0, 60))
    cur = _jsonl(tmp_path / "cur.jsonl", _rows(60, 120, {"output": "answer"}))
    batch = load(cur)
    assert batch.unread_fields == ("answer",)
    report = run_audit(cur, ref, rules=MMD_ONLY, encoder=ENC, cache_dir=None).report
    notes = _notes(report)
    unread = [f for f in notes if "unread_fields" in f.details]
    assert [f.details["unread_fields"] for f in unread] == [["answer"]]
    assert unread[0].severity == "warn" and unread[0].side == "current"
    assert report.status != "pass"
    assert report.to_dict()["inputs"]["current"]["fields"]["unread"] == ["answer"]
    # and the sides were read differently (prompt/response pairs vs instruction+input text)
    assert any("reference_fields" in f.details for f in notes)


def test_sides_read_from_different_fields_warn(tmp_path: Path) -> None:
    ref = _jsonl(tmp_path / "ref.jsonl", _rows(0, 60))
    texts = [{"text": "\n".join(p for p in (r["instruction"], r["input"], r["output"]) if p)} for r in _rows(60, 120)]
    cur = _jsonl(tmp_path / "cur.jsonl", texts)
    report = run_audit(cur, ref, rules=MMD_ONLY, encoder=ENC, cache_dir=None).report
    (note,) = [f for f in _notes(report) if "reference_fields" in f.details]
    assert note.details["current_fields"] == ["text"]
    assert note.details["reference_fields"] == ["instruction", "input", "output"]
    assert note.severity == "warn"


def test_same_shape_gives_no_input_note(tmp_path: Path) -> None:
    ref = _jsonl(tmp_path / "ref.jsonl", _rows(0, 60))
    cur = _jsonl(tmp_path / "cur.jsonl", _rows(60, 120))
    report = run_audit(cur, ref, rules=MMD_ONLY, encoder=ENC, cache_dir=None).report
    assert _notes(report) == []
    assert report.to_dict()["inputs"]["reference"]["fields"]["unread"] == []


def test_same_roles_under_other_names_give_no_note() -> None:
    # Alpaca's output and the seed tasks' instances.*.output are both read as responses
    from auditor.gate import input_notes
    from tests.fakes import fake_snapshot

    gen = fake_snapshot(load(data("alpaca_5000.json")), ENC)
    seeds = fake_snapshot(load(data("self_instruct_seed_tasks.jsonl")), ENC)
    assert input_notes(seeds, gen) == []


def test_ids_and_labels_are_not_unread_text() -> None:
    # T0 records carry 'id' and 'template' (single tokens): not free text, not flagged
    batch = load(data("t0_templated_788.jsonl"))
    assert batch.text_fields == ("prompt", "completion")
    assert batch.unread_fields == ()
