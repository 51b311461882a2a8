import numpy as np
import pytest

from auditor.gate import evaluate, grade
from auditor.rules import load_rules, parse_rules
from auditor.textutil import batch_from_texts
from auditor.types import AuditorError, Finding, ModelInfo, Report, Snapshot


def write(tmp_path, text):
    p = tmp_path / "rules.yaml"
    p.write_text(text)
    return p


def test_default_rules_load_and_describe_multiple_testing():
    rules = load_rules()
    assert {r.check for r in rules.rules} >= {"mmd", "classifier"}
    d = rules.describe()
    assert d["fail_threshold"] == pytest.approx(rules.alpha / rules.n_fail_rules)
    assert "Bonferroni" in d["multiple_testing"]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("rules:\n  - check: nope\n", "rules[0].check: unknown check 'nope'"),
        ("rules:\n  - check: mmd\n    params: {permutation: 5}\n", "rules[0].params.permutation: unknown parameter"),
        ("rules:\n  - check: mmd\n    colour: red\n", "rules[0].colour: unknown key"),
        ("rules:\n  - check: mmd\n    severity: fatal\n", "rules[0].severity: 'fatal'"),
        ("rules:\n  - check: mmd\n    params: {permutations: many}\n", "should be an integer"),
        ("alpha: 2\nrules:\n  - check: mmd\n", "alpha: 2 is not a probability"),
        ("extra: 1\nrules:\n  - check: mmd\n", "extra: unknown key"),
        ("rules: []\n", "rules: expected a non-empty list"),
        ("rules:\n  - check: mmd\n  - check: mmd\n", "duplicate rule name 'mmd'"),
        ("rules: [\n", "invalid YAML"),
    ],
)
def test_bad_rules_name_file_and_key(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(AuditorError) as err:
        load_rules(p)
    assert str(p) in str(err.value) and needle in str(err.value)


def test_missing_rules_file(tmp_path):
    with pytest.raises(AuditorError, match="rules file not found"):
        load_rules(tmp_path / "none.yaml")


def test_grading_bonferroni_ceiling_and_min_effect():
    rules = parse_rules(
        {
            "alpha": 0.01,
            "warn_alpha": 0.05,
            "rules": [
                {"name": "a", "check": "mmd", "severity": "fail", "min_effect": 2.0},
                {"name": "b", "check": "classifier", "severity": "warn"},
            ],
        },
        "x.yaml",
    )
    assert rules.fail_threshold == 0.01  # only one rule can fail
    a, b = rules.rules
    f = Finding(check="mmd", summary="s", side="current", p_value=0.005, effect_size=3.0)
    assert grade(f, a, rules).severity == "fail"
    assert grade(f, b, rules).severity == "warn"  # ceiling of a warn rule
    assert grade(f.__class__(**{**f.__dict__, "effect_size": 1.0}), a, rules).severity == "warn"
    assert grade(Finding(check="mmd", summary="s", side="current", p_value=0.02), a, rules).severity == "warn"
    assert grade(Finding(check="mmd", summary="s", side="current", p_value=0.5), a, rules).severity == "info"
    assert grade(Finding(check="mmd", summary="s", side="current"), a, rules).severity == "info"


def _snap(x, tag):
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return Snapshot(
        batch=batch_from_texts([f"{tag} {i}" for i in range(len(x))]),
        embeddings=x,
        model=ModelInfo("synthetic", "0" * 64, x.shape[1]),
    )


def test_evaluate_builds_report_with_status_and_roundtrips():
    rules = parse_rules({"rules": [{"check": "mmd", "params": {"permutations": 199}}]}, "r.yaml")
    rng = np.random.default_rng(0)
    same = evaluate(_snap(rng.normal(size=(80, 8)), "r"), _snap(rng.normal(size=(80, 8)), "c"), rules, seed=3)
    assert same.status == "pass" and same.exit_code == 0 and same.seed == 3
    y = rng.normal(size=(80, 8))
    y[:, 0] += 2
    moved = evaluate(_snap(rng.normal(size=(80, 8)), "r"), _snap(y, "c"), rules, seed=3)
    assert moved.status == "fail" and moved.exit_code == 1
    assert moved.findings[0].severity == "fail" and moved.findings[0].rule == "mmd"
    d = moved.to_dict()
    assert d["schema_version"] == 1 and d["inputs"]["current"]["n_records"] == 80
    assert set(d["findings"][0]) >= {"check", "severity", "summary", "statistic", "p_value", "side", "record_ids"}
    assert Report.from_dict(d).to_dict() == d
