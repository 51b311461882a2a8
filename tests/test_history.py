"""Curation-round history: record diffs, cluster shifts, round drift and slow-drift trends."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from auditor.curation import diff_report, trend_report
from auditor.report.rounds import diff_markdown
from auditor.rounds import (
    DIFF_CHECKS,
    TREND_CHECKS,
    cluster_shift,
    cluster_table,
    diff_records,
    round_drift,
    trend,
)
from auditor.store import Store
from auditor.textutil import batch_from_texts
from auditor.types import ModelInfo, Snapshot
from tests.fakes import FakeEncoder, fake_snapshot
from tests.helpers import data

ALPHA = 0.01
TREND_THRESHOLD = ALPHA / len(TREND_CHECKS)  # the gate's Bonferroni split across the trend checks
ENC = FakeEncoder()


# --------------------------------------------------------------------------------------
# helpers


@lru_cache(maxsize=1)
def alpaca() -> tuple[str, ...]:
    rows = json.loads(data("alpaca_5000.json").read_text())
    return tuple((r["instruction"] + "\n" + r["input"]).strip() for r in rows)


@lru_cache(maxsize=1)
def seed_tasks() -> tuple[str, ...]:
    rows = [json.loads(line) for line in data("self_instruct_seed_tasks.jsonl").read_text().splitlines()]
    return tuple((r["instruction"] + "\n" + r["instances"][0]["input"]).strip() for r in rows)


def text_snap(texts: list[str], ids: list[str] | None = None) -> Snapshot:
    return fake_snapshot(batch_from_texts(texts, ids=ids), ENC)


D = 32
SYNTH = ModelInfo(name="synthetic-gaussian", sha256="0" * 64, dim=D)


def vec_snap(uids: list[int], x: np.ndarray) -> Snapshot:
    """A round of synthetic records: record u has text 'record u' and embedding x[u]."""
    batch = batch_from_texts([f"record {u}" for u in uids])
    return Snapshot(batch=batch, embeddings=x[uids].astype(np.float32), model=SYNTH)


def fresh_chain(seed: int, *, delta: float, n: int = 400, rounds: int = 5) -> list[Snapshot]:
    """Each round a fresh sample whose mean has moved ``delta * t / rounds`` along e_0."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(((rounds + 1) * n, D))
    for t in range(rounds + 1):
        x[t * n : (t + 1) * n, 0] += delta * t / rounds
    return [vec_snap(list(range(t * n, (t + 1) * n)), x) for t in range(rounds + 1)]


def refine_chain(
    seed: int, *, n: int = 300, frac: float = 0.2, rounds: int = 5, d: int = D
) -> list[Snapshot]:
    """A random walk: each round replaces a random ``frac`` of its parent with fresh records
    from the same distribution (what honest refinement looks like)."""
    rng = np.random.default_rng(seed)
    m = int(frac * n)
    x = rng.standard_normal((n + rounds * m, d))
    cur, nxt = list(range(n)), n
    out = [vec_snap(cur, x)]
    for _ in range(rounds):
        drop = set(rng.choice(cur, m, replace=False).tolist())
        cur = [u for u in cur if u not in drop] + list(range(nxt, nxt + m))
        nxt += m
        out.append(vec_snap(cur, x))
    return out


def min_p(findings: list) -> float:  # type: ignore[type-arg]
    return min(f.p_value for f in findings if f.p_value is not None)


# --------------------------------------------------------------------------------------
# record diffs


def test_diff_records_by_content_hash_sees_through_re_ids() -> None:
    a = batch_from_texts(["alpha", "beta", "gamma", "gamma"], ids=["1", "2", "3", "4"])
    b = batch_from_texts(["gamma", "beta ", "delta", "alpha"], ids=["x", "y", "z", "w"])
    d = diff_records(a, b)
    # "beta " normalises to "beta": kept; one of the two "gamma" is gone
    assert sorted(a.ids[i] for i in d.removed) == ["4"]
    assert [b.ids[j] for j in d.added] == ["z"]
    assert sorted(zip([a.ids[i] for i in d.kept_a], [b.ids[j] for j in d.kept_b], strict=True)) == [
        ("1", "w"),
        ("2", "y"),
        ("3", "x"),
    ]
    assert d.reided == 3
    assert d.to_dict() == {"n_added": 1, "n_removed": 1, "n_kept": 3, "n_reided": 3}


def test_swapping_content_under_the_same_ids_is_a_change() -> None:
    a = batch_from_texts(["safe answer one", "safe answer two"], ids=["q1", "q2"])
    b = batch_from_texts(["safe answer one", "rewritten answer two"], ids=["q1", "q2"])
    d = diff_records(a, b)
    assert len(d.added) == 1 and len(d.removed) == 1 and d.reided == 0


# --------------------------------------------------------------------------------------
# cluster shift


def test_cluster_shift_finds_targeted_removal_in_real_data() -> None:
    rng = np.random.default_rng(0)
    pool = alpaca()
    r0 = [pool[i] for i in rng.permutation(len(pool))[:400]]
    topic = re.compile(r"\b(poem|story|write)\b", re.I)
    r1 = [t for t in r0 if not topic.search(t)]
    a, b = text_snap(r0), text_snap(r1)
    from auditor.index import kmeans

    basis, _ = kmeans(a.embeddings, 10, seed=0)
    findings = cluster_shift(a, b, basis)
    lost = [f for f in findings if f.details.get("direction") == "lost"]
    assert lost and lost[0].p_value < 1e-3 and lost[0].side == "reference"
    removed = {a.ids[i] for i in diff_records(a, b).removed}
    assert set(lost[0].record_ids) <= removed
    on_topic = sum(bool(topic.search(a.texts[a.ids.index(i)])) for i in lost[0].record_ids)
    assert on_topic == len(lost[0].record_ids)
    assert lost[0].details["removed"] > lost[0].details["expected_removed"]


def test_cluster_shift_finds_targeted_addition() -> None:
    rng = np.random.default_rng(1)
    k, n = 6, 600
    ca = rng.integers(0, k, n)
    # B keeps 500 of A and adds 100 records, 60 of them from cluster 2 (expected ~17)
    keep = rng.permutation(n)[:500]
    added = np.concatenate([np.full(60, 2), rng.integers(0, k, 40)])
    a = vec_snap(list(range(n)), np.zeros((n + 100, D)))
    b = vec_snap([int(u) for u in keep] + list(range(n, n + 100)), np.zeros((n + 100, D)))
    findings = cluster_shift(a, b, a_clusters=ca, b_clusters=np.concatenate([ca[keep], added]))
    top = findings[0]
    assert top.details["cluster"] == 2 and top.details["direction"] == "gained"
    assert top.p_value < 1e-6 and top.side == "current"
    assert set(top.record_ids) <= {f"{b.ids[j]}" for j in range(500, 600)}


def test_cluster_shift_is_calibrated_under_random_refinement() -> None:
    """Random removals and additions from the same distribution: the smallest BH-adjusted
    p-value per diff falls below 0.05 in at most about 5% of the rounds."""
    rng = np.random.default_rng(2)
    k, n, reps, hits = 6, 200, 200, 0
    probs = rng.dirichlet(np.ones(k) * 2)
    x = np.zeros((n + 60, 2))
    a = vec_snap(list(range(n)), x)
    for _ in range(reps):
        labels = rng.choice(k, size=n + 60, p=probs)
        keep = np.sort(rng.permutation(n)[: n - 40 + int(rng.integers(-20, 21))])
        b_uids = [int(u) for u in keep] + list(range(n, n + 60))
        b = vec_snap(b_uids, x)
        f = cluster_shift(a, b, a_clusters=labels[:n], b_clusters=labels[b_uids])
        hits += min_p(f) < 0.05
    # binomial(200, <=0.05): mean 10, sd 3.1; allow 3 sd
    assert hits <= 19, hits


# --------------------------------------------------------------------------------------
# round drift


def test_round_drift_is_exact_under_heavy_overlap() -> None:
    """Child = parent with 20% randomly replaced: p-values are uniform (not inflated by the
    shared records, not crushed towards 1 as an independent-samples test would be)."""
    ps = []
    for seed in range(150):
        ch = refine_chain(seed, n=60, rounds=1, d=4)
        ps.append(round_drift(ch[0], ch[1], seed=seed, n_permutations=99).p_value)
    ps = np.array(ps)
    assert (ps <= 0.05).mean() <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 150)
    assert (ps <= 0.5).mean() >= 0.35  # not degenerate near 1


def test_round_drift_detects_a_source_change_in_real_data() -> None:
    rng = np.random.default_rng(0)
    pool = alpaca()
    idx = rng.permutation(len(pool))
    r0 = [pool[i] for i in idx[:400]]
    swapped = text_snap(r0[100:] + list(seed_tasks()))  # 100 removed, 175 seed tasks added
    honest = text_snap(r0[100:] + [pool[i] for i in idx[400:575]])  # same sizes, same source
    a = text_snap(r0)
    assert round_drift(a, swapped, seed=0).p_value < 0.005
    assert round_drift(a, honest, seed=0).p_value > 0.05


# --------------------------------------------------------------------------------------
# trend


def test_slow_drift_invisible_pairwise_fails_the_trend() -> None:
    """5 rounds, each moving the mean 1/5 of the way: no consecutive pair is significant
    (neither the exact round test nor the kernel two-sample test), the root comparison
    and the trend are."""
    from auditor.checks.drift import mmd

    chain = fresh_chain(0, delta=0.55)
    for parent, child in zip(chain, chain[1:], strict=False):
        assert round_drift(parent, child, seed=1).p_value > TREND_THRESHOLD
        assert mmd(parent, child, seed=1, permutations=200)[0].p_value > TREND_THRESHOLD
    assert round_drift(chain[0], chain[-1], seed=1).p_value <= 0.002

    findings = {f.check: f for f in trend(chain, seed=0, names=[f"r{t}" for t in range(6)])}
    assert set(findings) == set(TREND_CHECKS)
    assert findings["trend_root_drift"].p_value < TREND_THRESHOLD
    assert findings["trend_root_drift"].details["round"] in ("r4", "r5")
    assert findings["trend_direction"].p_value < TREND_THRESHOLD
    assert findings["trend_direction"].details["n_steps_forward"] >= 4
    assert findings["trend_parent_drift"].p_value > TREND_THRESHOLD
    rounds = findings["trend_root_drift"].details["rounds"]
    assert [r["round"] for r in rounds] == ["r1", "r2", "r3", "r4", "r5"]
    report = trend_report(chain, [f"r{t}" for t in range(6)], seed=0)
    assert report.status == "fail" and report.exit_code == 1


def test_targeted_slices_of_real_data_fail_the_trend() -> None:
    """Root = 600 Alpaca records; each round swaps a further 12 for records about poems
    and stories.  The records pointed at are the swapped-in ones."""
    pool = alpaca()
    topic = re.compile(r"\b(poem|poems|story|stories)\b", re.I)
    target = [t for t in pool if topic.search(t)]
    other = [t for t in pool if not topic.search(t)]
    rng = np.random.default_rng(0)
    cur = [other[i] for i in rng.permutation(len(other))[:600]]
    tg = [target[i] for i in rng.permutation(len(target))]
    chain = [text_snap(cur)]
    for t in range(5):
        originals = [x for x in cur if not topic.search(x)]
        drop = {originals[i] for i in rng.choice(len(originals), 12, replace=False)}
        cur = [x for x in cur if x not in drop] + tg[12 * t : 12 * (t + 1)]
        chain.append(text_snap(cur))
    report = trend_report(chain, [f"round{t}" for t in range(6)], seed=0)
    assert report.status == "fail"
    root = next(f for f in report.findings if f.check == "trend_root_drift")
    assert root.p_value < TREND_THRESHOLD and root.severity == "fail"
    last = chain[-1]
    flagged = [last.texts[last.ids.index(i)] for i in root.record_ids]
    assert flagged and sum(bool(topic.search(t)) for t in flagged) / len(flagged) >= 0.8


# Each honest chain fails the gate with probability <= alpha = 1% by construction (see the
# calibration test below), so a handful of fixed seeds must all pass.
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kind", ["fresh", "refine"])
def test_random_chains_pass(seed: int, kind: str) -> None:
    chain = fresh_chain(seed, delta=0.0) if kind == "fresh" else refine_chain(seed)
    report = trend_report(chain, [f"r{t}" for t in range(len(chain))], seed=seed, n_permutations=999)
    assert report.exit_code == 0, [(f.check, f.p_value) for f in report.findings]
    assert not [f for f in report.findings if f.severity == "fail"]
    assert min_p(list(report.findings)) >= TREND_THRESHOLD


def test_trend_is_calibrated_on_random_walk_chains() -> None:
    """Honest refinement chains are random walks, which fool tests that treat rounds as
    independent samples; the membership permutation keeps every trend test exact."""
    reps = 150
    ps = {c: [] for c in TREND_CHECKS}  # type: dict[str, list[float]]
    for seed in range(reps):
        for f in trend(refine_chain(seed, n=40, rounds=4, d=4), seed=seed, n_permutations=99):
            ps[f.check].append(f.p_value)
    bound = 0.05 + 3 * np.sqrt(0.05 * 0.95 / reps)
    for check, values in ps.items():
        assert len(values) == reps
        assert (np.array(values) <= 0.05).mean() <= bound, check


def test_two_round_chain_has_only_the_root_test() -> None:
    chain = refine_chain(0, rounds=1)
    assert [f.check for f in trend(chain, seed=0)] == ["trend_root_drift"]


def test_trend_refuses_mixed_models() -> None:
    from auditor.types import AuditorError

    a = text_snap(["one thing", "another thing"])
    b = fake_snapshot(batch_from_texts(["one thing", "a third"]), FakeEncoder(dim=16))
    with pytest.raises(AuditorError, match="different models"):
        trend([a, b], seed=0)


# --------------------------------------------------------------------------------------
# snapshot -> diff -> verify, end to end on real data


def test_snapshot_diff_verify_on_real_data(tmp_path: Path) -> None:
    from auditor.rules import load_rules

    rng = np.random.default_rng(0)
    pool = alpaca()
    idx = rng.permutation(len(pool))
    r0 = [pool[i] for i in idx[:400]]
    r1 = r0[100:] + list(seed_tasks())
    store = Store.create(tmp_path / "rounds")
    store.add_snapshot(text_snap(r0), "round0", basis_k=10)
    # round1 re-ids every kept record: the diff still sees them as kept
    store.add_snapshot(text_snap(r1, ids=[f"r1-{i}" for i in range(len(r1))]), "round1", parent="round0")
    assert store.verify() == []

    a, b = store.load("round0"), store.load("round1")
    ca, cb = store.clusters("round0"), store.clusters("round1")
    report, d = diff_report(a, b, load_rules(None), seed=0, basis=store.basis(), a_clusters=ca, b_clusters=cb)
    assert d.to_dict() == {"n_added": 175, "n_removed": 100, "n_kept": 300, "n_reided": 300}
    assert report.status == "fail" and report.exit_code == 1
    checks = {f.check for f in report.findings}
    assert {"round_drift", "cluster_shift", "round_records"} <= checks
    # the rules plus the round tests (round_drift, cluster_shift, dedup_resolution)
    assert report.rules["n_fail_rules"] == len(load_rules(None).rules) + len(DIFF_CHECKS)
    drift = next(f for f in report.findings if f.check == "round_drift")
    assert drift.severity == "fail"
    records = next(f for f in report.findings if f.check == "round_records")
    assert len(records.record_ids) == 175 and records.p_value is None
    json.dumps(report.to_dict())  # the report.json contract holds

    md = diff_markdown(
        report, d, a, b, a_name="round0", b_name="round1", clusters=cluster_table(ca, cb, len(store.basis()))
    )
    assert "| added | 175 |" in md and "| kept but re-ided | 300 |" in md
    assert "round\\_drift" in md or "round_drift" in md


def test_random_refinement_diff_passes_on_real_data() -> None:
    from auditor.index import kmeans
    from auditor.rules import load_rules

    rng = np.random.default_rng(3)
    pool = alpaca()
    idx = rng.permutation(len(pool))
    a = text_snap([pool[i] for i in idx[:400]])
    b = text_snap([pool[i] for i in idx[100:400]] + [pool[i] for i in idx[400:520]])
    basis, _ = kmeans(a.embeddings, 10, seed=0)
    report, _ = diff_report(a, b, load_rules(None), seed=0, basis=basis)
    # these records have no prompt/response split, so the rule that reads one is skipped
    # and says so in a warning (issue 10); nothing the data did may warn or fail
    assert report.status != "fail", [(f.check, f.p_value) for f in report.findings]
    assert [f for f in report.findings if f.severity != "info" and f.check != "gate"] == []
    skipped = {o.rule for o in report.outcomes if o.status == "skipped"}
    # a random refinement has no duplicate groups: the resolution test has nothing to test
    assert skipped == {r.name for r in load_rules(None).rules if r.check == "flipped_responses"} | {
        "dedup_resolution"
    }


def test_diff_markdown_neutralises_adversarial_text() -> None:
    from auditor.rules import load_rules

    evil = "<script>alert(1)</script> | col | [click](http://x) @maintainer `code`"
    a = text_snap(["an ordinary record", "another ordinary record"])
    b = text_snap(["an ordinary record", evil])
    report, d = diff_report(a, b, load_rules(None), seed=0)
    md = diff_markdown(report, d, a, b, a_name="<b>r0</b>", b_name="r1|x")
    assert "<script>" not in md and "<b>" not in md
    assert re.search(r"(?<!\\)\]\(http", md) is None  # the link bracket is escaped
    assert "@maintainer" not in md  # a word joiner breaks the mention
    added_line = next(line for line in md.splitlines() if "alert" in line)
    assert "\\|" in added_line and " | col | " not in added_line


def test_targeted_removal_is_seen_by_round_drift() -> None:
    """Pure filtering (nothing added): the removed-vs-kept contrast carries the test."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((400, D))
    x[:60, 0] += 1.5  # a coherent group the curator drops
    a = vec_snap(list(range(400)), x)
    b = vec_snap(list(range(60, 400)), x)
    f = round_drift(a, b, seed=0)
    assert f.p_value < 0.005 and f.details["contrast"] == "removed"
    assert f.side == "reference" and len(f.record_ids) >= 30
    assert set(f.record_ids) <= {a.ids[i] for i in range(60)}


def test_permutations_reach_the_gate_threshold() -> None:
    from auditor.curation import permutations_for

    for threshold in (0.01 / 3, 0.01 / 4, 0.01 / 12, 1e-4):
        b = permutations_for(threshold)
        assert 1 / (b + 1) <= threshold / 10 or b == 19999
        assert b >= 999


# --------------------------------------------------------------------------------------
# the CLI commands (the store is built with the fake encoder; these commands never embed)


@pytest.fixture()
def round_store(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    pool = alpaca()
    idx = rng.permutation(len(pool))
    r0 = [pool[i] for i in idx[:300]]
    r1 = r0[60:] + [pool[i] for i in idx[300:360]]  # honest refinement
    r2 = r1[50:] + list(seed_tasks())[:50]  # 50 records from another source
    store = Store.create(tmp_path / "rounds")
    store.add_snapshot(text_snap(r0), "r0", basis_k=8)
    store.add_snapshot(text_snap(r1), "r1", parent="r0")
    store.add_snapshot(text_snap(r2), "r2", parent="r1")
    return tmp_path / "rounds"


def _cli(*args: str):  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from auditor.cli import app

    return CliRunner().invoke(app, list(args))


def test_cli_history_diff_trend(round_store: Path, tmp_path: Path) -> None:
    res = _cli("history", "--store", str(round_store), "--verify", "--json", "--permutations", "199")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["rounds"]
    assert [r["name"] for r in rows] == ["r0", "r1", "r2"]
    assert (rows[1]["n_added"], rows[1]["n_removed"], rows[2]["n_added"]) == (60, 60, 50)

    res = _cli("diff", "r0", "r1", "--store", str(round_store), "--out", str(tmp_path / "d01"), "-q")
    assert res.exit_code == 0, res.output
    res = _cli("diff", "r1", "r2", "--store", str(round_store), "--out", str(tmp_path / "d12"), "-q")
    assert res.exit_code == 1, res.output
    report = json.loads((tmp_path / "d12" / "report.json").read_text())
    assert report["status"] == "fail" and report["schema_version"] == 1
    assert {"report.json", "report.md", "diff.md"} <= {p.name for p in (tmp_path / "d12").iterdir()}
    assert "| added | 50 |" in (tmp_path / "d12" / "diff.md").read_text()

    res = _cli("trend", "--store", str(round_store), "--name", "r1", "-q", "--permutations", "999")
    assert res.exit_code == 0, res.output


def test_cli_verify_exits_1_naming_the_broken_file(round_store: Path) -> None:
    path = round_store / "snapshots" / "r1" / "records.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    res = _cli("history", "--store", str(round_store), "--verify")
    assert res.exit_code == 1
    assert "snapshots/r1/records.parquet" in res.output


def test_share_change_test_is_fisher_without_overlap_and_exact_with_it() -> None:
    from auditor.rounds import share_change_test
    from auditor.stats import fisher_exact_greater, fisher_exact_less

    # no kept records: the gain/loss p-values are Fisher's one-sided tests
    _, gain, loss = share_change_test(m_c=30, n_ao=100, n_k=0, n_bo=80, a_obs=10, b_obs=20)
    assert gain == pytest.approx(fisher_exact_greater(20, 10, 60, 90), rel=1e-9)
    assert loss == pytest.approx(fisher_exact_less(20, 10, 60, 90), rel=1e-9)
    # with overlap: compare the two-sided p with a simulation of the membership null
    rng = np.random.default_rng(0)
    n_ao, n_k, n_bo, m_c, a_obs, b_obs = 40, 150, 50, 45, 3, 16
    p_two, _, _ = share_change_test(m_c, n_ao, n_k, n_bo, a_obs, b_obs)
    labels = np.zeros(n_ao + n_k + n_bo, dtype=bool)
    labels[:m_c] = True
    d_obs = (m_c - a_obs) / (n_k + n_bo) - (m_c - b_obs) / (n_ao + n_k)
    hits = 0
    for _ in range(20000):
        perm = rng.permutation(labels)
        a, b = perm[:n_ao].sum(), perm[n_ao + n_k :].sum()
        hits += abs((m_c - a) / (n_k + n_bo) - (m_c - b) / (n_ao + n_k)) >= abs(d_obs) - 1e-12
    assert p_two == pytest.approx(hits / 20000, abs=0.01)
    assert p_two < 0.05


def test_churned_cluster_is_not_a_share_change() -> None:
    """Round B drops 40 records of cluster 0 and adds 40 new ones of cluster 0: the share
    did not move, so no finding, though removals and additions were both targeted."""
    rng = np.random.default_rng(5)
    k, n = 5, 500
    ca = rng.integers(0, k, n)
    in0 = np.flatnonzero(ca == 0)
    drop = set(in0[:40].tolist())
    keep = [u for u in range(n) if u not in drop]
    x = np.zeros((n + 40, D))
    a = vec_snap(list(range(n)), x)
    b = vec_snap(keep + list(range(n, n + 40)), x)
    cb = np.concatenate([ca[keep], np.zeros(40, dtype=np.int64)])
    findings = cluster_shift(a, b, a_clusters=ca, b_clusters=cb)
    assert len(findings) == 1 and findings[0].p_value > 0.5
    # the removals alone were blatantly targeted (all 40 from cluster 0)
    from auditor.stats import fisher_exact_greater

    kept0 = int((ca[keep] == 0).sum())
    assert fisher_exact_greater(40, kept0, 0, len(keep) - kept0) < 1e-6
