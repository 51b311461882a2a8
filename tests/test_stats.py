import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sst

from auditor import stats


@given(st.lists(st.floats(0, 1), min_size=1, max_size=60))
@settings(max_examples=200, deadline=None)
def test_bh_properties(p):
    q = stats.benjamini_hochberg(p)
    p = np.asarray(p)
    assert q.shape == p.shape
    assert np.all(q >= p - 1e-12)  # adjusting never makes a p-value smaller
    assert np.all(q <= 1)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(q[order]) >= -1e-12)  # monotone in p


def test_bh_matches_scipy():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=50) ** 3
    np.testing.assert_allclose(stats.benjamini_hochberg(p), sst.false_discovery_control(p), rtol=1e-10)


def test_permutation_p_value_never_zero_and_counts_ties():
    null = np.array([0.1, 0.2, 0.3, 0.4])
    assert stats.permutation_p_value(10.0, null) == 1 / 5
    assert stats.permutation_p_value(0.3, null) == 3 / 5
    assert stats.permutation_p_value(-1.0, null) == 1.0


@given(st.integers(0, 30), st.integers(0, 30), st.integers(0, 60), st.integers(0, 60))
@settings(max_examples=100, deadline=None)
def test_fisher_matches_scipy(a, b, c, d):
    if a + b == 0 or c + d == 0 or a + c == 0 or b + d == 0:
        return
    want = sst.fisher_exact([[a, b], [c, d]], alternative="greater").pvalue
    assert abs(stats.fisher_exact_greater(a, b, c, d) - want) < 1e-9
    want = sst.fisher_exact([[a, b], [c, d]], alternative="less").pvalue
    assert abs(stats.fisher_exact_less(a, b, c, d) - want) < 1e-9


def test_stratified_auc_null_is_uniform_and_detects_shift():
    rng = np.random.default_rng(1)
    ps = []
    for _ in range(300):
        scores = rng.normal(size=200)
        labels = rng.integers(0, 2, size=200)
        strata = rng.integers(0, 5, size=200)
        ps.append(stats.stratified_auc_test(scores, labels, strata)[1])
    ps = np.array(ps)
    assert 0.03 < (ps < 0.1).mean() < 0.18  # ~uniform: about 10% below 0.1
    labels = np.repeat([0, 1], 100)
    scores = rng.normal(size=200) + labels * 1.0
    auc, p = stats.stratified_auc_test(scores, labels, np.zeros(200, int))
    assert auc > 0.65 and p < 1e-5
    pos, neg = scores[labels == 1], scores[labels == 0]
    # one stratum: the AUC is P(pos > neg) over all pairs
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert abs(auc - pairs) < 1e-12


@given(
    st.lists(st.floats(-5, 5), min_size=1, max_size=30),
    st.lists(st.floats(-5, 5), min_size=1, max_size=10),
)
@settings(max_examples=100, deadline=None)
def test_conformal_p_counts_null_scores_at_least_as_large(null, scores):
    p = stats.conformal_p(np.array(null), np.array(scores))
    want = [(1 + sum(v >= s for v in null)) / (len(null) + 1) for s in scores]
    assert np.allclose(p, want)


def test_share_ratio_is_finite_and_symmetric() -> None:
    assert stats.share_ratio(10, 10, 100, 100) == 1.0
    assert stats.share_ratio(20, 0, 100, 100) == 41.0  # (20.5 / 100.5) / (0.5 / 100.5)
    assert np.isclose(stats.share_ratio(3, 7, 50, 80), 1 / stats.share_ratio(7, 3, 80, 50))
