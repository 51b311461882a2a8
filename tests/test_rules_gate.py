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
    # weighted Bonferroni: the thresholds of the rules that can fail add up to alpha
    fail = [r for r in d["rules"] if r["severity"] == "fail" and r["enabled"]]
    assert sum(r["fail_threshold"] for r in fail) == pytest.approx(rules.alpha)
    assert d["fail_threshold"] == pytest.approx(rules.alpha / sum(r["weight"] for r in fail))
    assert "Bonferroni" in d["multiple_testing"]


def test_default_weights_favour_the_localizing_checks_and_mmd_can_reach_its_threshold():
    rules = load_rules()
    by_check = {r.check: r for r in rules.rules}
    small = [by_check[c] for c in ("triggers", "near_duplicates", "flipped_responses", "off_support")]
    omnibus = [by_check[c] for c in ("mmd", "classifier")]
    assert min(rules.fail_threshold_of(r) for r in small) > max(rules.fail_threshold_of(r) for r in omnibus)
    # ten new records against none (p ~ 2^-10 = 9.7e-4) can fail through a small-count check
    assert all(rules.fail_threshold_of(r) > 9.7e-4 for r in small)
    # the permutation test's smallest p-value lies below its (smaller) threshold
    mmd = by_check["mmd"]
    assert 1 / (mmd.params["max_permutations"] + 1) < rules.fail_threshold_of(mmd) / 2


def test_weighted_grading_uses_each_rules_own_threshold():
    rules = parse_rules(
        {
            "alpha": 0.01,
            "warn_alpha": 0.05,
            "rules": [
                {"name": "heavy", "check": "triggers", "weight": 3},
                {"name": "light", "check": "mmd", "weight": 1},
                {"name": "notes", "check": "classifier", "severity": "info", "weight": 4},
            ],
        },
        "w.yaml",
    )
    heavy, light, notes = rules.rules
    assert rules.fail_threshold_of(heavy) == pytest.approx(0.0075)  # 0.01 * 3 / 4: info rules do not count
    assert rules.fail_threshold_of(light) == pytest.approx(0.0025)
    assert rules.warn_threshold_of(light) == pytest.approx(0.05 / 8)  # warnings: every rule's weight
    f = Finding(check="x", summary="s", side="current", p_value=0.005)
    assert grade(f, heavy, rules).severity == "fail"
    assert grade(f, light, rules).severity == "warn"
    assert grade(f, notes, rules).severity == "info"
    d = rules.describe()
    assert [r["fail_threshold"] for r in d["rules"]] == pytest.approx([0.0075, 0.0025, None])  # type: ignore[list-item]
    assert d["rules"][0]["weight"] == 3.0


def test_weighted_gate_stays_calibrated_under_the_null():
    """Uniform p-values for every rule (the null), lopsided weights: the share of runs
    where any rule fails stays <= alpha, as the union bound promises."""
    rules = parse_rules(
        {"alpha": 0.05, "rules": [{"name": f"r{i}", "check": "mmd", "weight": w} for i, w in enumerate((8, 1, 0.5, 0.25))]},
        "w.yaml",
    )
    rng = np.random.default_rng(0)
    p = rng.uniform(size=(20000, len(rules.rules)))
    limits = np.array([rules.fail_threshold_of(r) for r in rules.rules])
    rate = float((p < limits).any(axis=1).mean())
    assert rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 20000)
    assert rate > 0.04  # independent rules use nearly all of it: the split is not wasteful


def test_two_stage_permutation_p_value_is_valid():
    """sequential_p under the null: the statistic's rank among both stages' permutations is
    uniform, so P(p <= u) <= u at every u, including below the first stage's floor."""
    from auditor.checks.drift import sequential_p

    rng = np.random.default_rng(1)
    b1, b2, h, runs = 99, 999, 5, 20000
    ps = np.empty(runs)
    for i in range(runs):
        k1 = int(rng.binomial(b1, rng.uniform()))  # exceedances of a null statistic: uniform rank
        k2 = int(rng.binomial(b2, rng.uniform()))
        ps[i] = sequential_p((k1 + 1) / (b1 + 1), b1, h, (k2 + 1) / (b2 + 1))
    for u in (0.002, 0.01, 0.03, 0.06, 0.1, 0.5):
        assert (ps <= u).mean() <= u + 3 * np.sqrt(u * (1 - u) / runs), u
    assert ps.min() < 1 / (b1 + 1)  # the second stage reaches below the first's floor


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


def test_mmd_second_stage_runs_only_when_the_first_cannot_say():
    from auditor.checks.drift import mmd

    rng = np.random.default_rng(3)
    ref = _snap(rng.normal(size=(150, 16)), "r")
    same = _snap(rng.normal(size=(150, 16)), "c")
    shifted = rng.normal(size=(150, 16))
    shifted[:, 0] += 1.0
    moved = mmd(ref, _snap(shifted, "c"), seed=7, permutations=200, max_permutations=2999)[0]
    assert moved.p_value == 1 / 3000 and moved.details["permutations"] == 2999
    null = mmd(ref, same, seed=7, permutations=200, max_permutations=2999)[0]
    assert null.details["permutations"] == 200 and null.p_value > 10 / 201


def test_report_shows_each_rules_threshold():
    from auditor.report.markdown import render_markdown

    rules = parse_rules(
        {"rules": [{"name": "drift", "check": "mmd", "weight": 3, "params": {"permutations": 199}},
                   {"name": "clf", "check": "classifier", "weight": 1}]},
        "r.yaml",
    )
    rng = np.random.default_rng(0)
    report = evaluate(_snap(rng.normal(size=(40, 8)), "r"), _snap(rng.normal(size=(40, 8)), "c"), rules, seed=0)
    assert [r["fail_threshold"] for r in report.to_dict()["rules"]["rules"]] == pytest.approx([0.0075, 0.0025])
    md = render_markdown(report)
    assert "weighted Bonferroni" in md and "0.0075 (drift)" in md and "0.0025 (clf)" in md
