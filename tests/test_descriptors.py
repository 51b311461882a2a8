"""Descriptor drift on real records: the bundled rounds' answers got longer, a label's
share moved, and random halves of Alpaca report nothing."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from auditor.checks import registry
from auditor.checks.descriptors import descriptor_drift
from auditor.io import load
from auditor.types import Snapshot
from tests.fakes import fake_snapshot
from tests.helpers import data, gate_level

GATE_LEVEL = gate_level("descriptors")  # the default rules' fail threshold for this check


@pytest.fixture(scope="module")
def alpaca() -> Snapshot:
    return fake_snapshot(load(data("alpaca_5000.json")))


def test_registered_in_the_default_gate() -> None:
    from auditor.rules import load_rules

    assert "descriptors" in registry()
    assert any(r.check == "descriptors" and r.severity == "fail" for r in load_rules(None).rules)


def test_bundled_rounds_responses_longer() -> None:
    """round2 (text-davinci-003) answers the same instructions at much greater length."""
    ref = fake_snapshot(load(data("davinci_self_instruct_predictions.jsonl")))
    cur = fake_snapshot(load(data("text_davinci_003_predictions.jsonl")))
    found = {f.details["descriptor"]: f for f in descriptor_drift(ref, cur, seed=0)}
    f = found["response_chars"]
    assert f.p_value < GATE_LEVEL and f.side == "current"
    assert f.details["median_current"] > 1.5 * f.details["median_reference"]
    assert f.summary.startswith("responses are ") and "longer: median" in f.summary
    # the listed records are the tail: longer than the reference's 90th percentile
    assert cur.batch.responses is not None
    row = {i: k for k, i in enumerate(cur.ids)}
    lengths = [len(cur.batch.responses[row[i]].strip()) for i in f.record_ids]
    assert min(lengths) >= f.details["tail_cut_chars"]
    assert len(f.record_ids) == f.details["n_tail_current"]
    assert str(len(f.record_ids)) in f.summary
    json.dumps(f.to_dict())
    # and the other way round the answers are shorter
    back = {g.details["descriptor"]: g for g in descriptor_drift(cur, ref, seed=0)}
    assert "shorter" in back["response_chars"].summary


def test_label_share(alpaca: Snapshot) -> None:
    """Real Alpaca prompts with a categorical answer; current answers 'Negative' twice as often."""
    b = alpaca.batch
    assert b.responses is not None
    rng = np.random.default_rng(3)
    labels = np.where(rng.random(len(b)) < 0.3, "Negative", "Positive")
    labels[4000:] = np.where(rng.random(1000) < 0.6, "Negative", "Positive")
    snap = Snapshot(
        batch=replace(b, responses=tuple(labels.tolist())),
        embeddings=np.asarray(alpaca.embeddings),
        model=alpaca.model,
    )
    ref, cur = snap.subset(range(3000)), snap.subset(range(3000, 5000))
    found = {f.details["descriptor"]: f for f in descriptor_drift(ref, cur, seed=0)}
    neg = found["label:Negative"]
    assert neg.p_value < GATE_LEVEL and neg.side == "current"
    truth = {cur.ids[i] for i in range(len(cur)) if labels[3000 + i] == "Negative"}
    assert neg.details["n_current"] == len(truth)
    # at most 500 ids per finding, and the summary says how many of how many are listed
    assert set(neg.record_ids) <= truth and len(neg.record_ids) == neg.details["n_listed"] == 500
    assert f"the first 500 of {len(truth)} are listed" in neg.summary
    assert found["label:Positive"].side == "reference"


def test_random_halves_report_nothing(alpaca: Snapshot) -> None:
    hits = 0
    for seed in range(20):
        perm = np.random.default_rng(seed).permutation(len(alpaca))
        found = descriptor_drift(alpaca.subset(perm[:2500]), alpaca.subset(perm[2500:]), seed=seed)
        hits += any(f.p_value is not None and f.p_value < GATE_LEVEL for f in found)
    assert hits == 0


@pytest.fixture(scope="module")
def t0() -> Snapshot:
    return fake_snapshot(load(data("t0_templated_788.jsonl")))


def test_mixture_labels_are_tested(t0: Snapshot, alpaca: Snapshot) -> None:
    """A templated mixture (T0: class names, star ratings, yes/no among free answers) has
    a categorical part though its answers are not categorical as a whole; Alpaca's free
    answers have none."""
    from auditor.checks.descriptors import _labels

    assert t0.batch.responses is not None and alpaca.batch.responses is not None
    labels = _labels(t0.batch.responses[:400], t0.batch.responses[400:], 20)
    assert labels is not None and {"No", "Company", "Business"} <= set(labels)
    assert "" not in labels  # an empty answer is its own descriptor, not a label
    assert _labels(alpaca.batch.responses[:2500], alpaca.batch.responses[2500:], 20) is None


def test_a_small_label_that_doubles_is_reportable() -> None:
    """T0 'one-star reviews' x2 at 1,666 a side: '1 star' answered by 28 reference and 58
    current records (1.7% -> 3.5%).  Under the absolute 5-point rule alone this could never
    be reported; the relative rule (ratio 1.5, 10 records of excess) reports it, and not a
    wobble of the same size class."""
    from auditor.checks.descriptors import _share_test

    def has(k: int, n: int = 1666) -> np.ndarray:
        return np.arange(n) < k

    p, ok, _, side, rows, details = _share_test("answered '1 star'", has(28), has(58), 0.05, 1.5, 10)
    assert ok and side == "current" and rows.size == 58 and p < 0.01
    assert details["share_ratio"] > 2.0
    assert not _share_test("answered '1 star'", has(28), has(58), 0.05)[1]  # absolute rule only
    assert not _share_test("answered '1 star'", has(40), has(52), 0.05, 1.5, 10)[1]  # ratio 1.3
    assert not _share_test("answered '1 star'", has(8), has(16), 0.05, 1.5, 10)[1]  # excess 8
    # and the other direction names the reference records
    p, ok, _, side, rows, _ = _share_test("answered '1 star'", has(58), has(28), 0.05, 1.5, 10)
    assert ok and side == "reference" and rows.size == 58


def test_random_halves_of_a_mixture_report_nothing(t0: Snapshot) -> None:
    hits = 0
    for seed in range(20):
        perm = np.random.default_rng(seed).permutation(len(t0))
        found = descriptor_drift(t0.subset(perm[:394]), t0.subset(perm[394:]), seed=seed)
        hits += any(f.p_value is not None and f.p_value < GATE_LEVEL for f in found)
    assert hits == 0
