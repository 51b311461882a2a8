import numpy as np
import pytest

from auditor.checks.drift import classifier, mmd, mmd_permutation_test, rbf_kernel
from auditor.textutil import batch_from_texts
from auditor.types import ModelInfo, Snapshot

MODEL = ModelInfo(name="synthetic", sha256="0" * 64, dim=16)


def snap(x: np.ndarray, tag: str) -> Snapshot:
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    batch = batch_from_texts([f"{tag} record {i}" for i in range(len(x))])
    return Snapshot(batch=batch, embeddings=x, model=MODEL)


def naive_mmd2(x, y, bw):
    k = lambda a, b: np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * bw * bw))  # noqa: E731
    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def test_mmd_statistic_matches_naive_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(25, 5)) + 0.3
    stat, p, bw, null = mmd_permutation_test(x, y, permutations=99, seed=1)
    assert abs(stat - naive_mmd2(x, y, bw)) < 1e-5
    assert null.shape == (99,)
    assert 1 / 100 <= p <= 1


def test_rbf_kernel_diagonal_is_one():
    z = np.random.default_rng(2).normal(size=(10, 4))
    k = rbf_kernel(z, 1.0)
    np.testing.assert_allclose(np.diag(k), 1.0, atol=1e-5)


def test_mmd_detects_shift_and_is_seeded():
    rng = np.random.default_rng(3)
    ref = snap(rng.normal(size=(150, 16)), "r")
    shifted = rng.normal(size=(150, 16))
    shifted[:, 0] += 1.0
    cur = snap(shifted, "c")
    f1 = mmd(ref, cur, seed=7, permutations=200)[0]
    f2 = mmd(ref, cur, seed=7, permutations=200)[0]
    assert f1.p_value == f2.p_value == 1 / 201
    assert f1.check == "mmd" and f1.side == "current" and f1.effect_size > 3


def test_mmd_null_p_values_are_calibrated():
    rng = np.random.default_rng(4)
    ps = []
    for i in range(40):
        x = rng.normal(size=(60, 16))
        y = rng.normal(size=(60, 16))
        ps.append(mmd(snap(x, "r"), snap(y, "c"), seed=i, permutations=99)[0].p_value)
    ps = np.array(ps)
    assert (ps < 0.05).mean() <= 0.15  # nominal 5%, 40 draws
    assert ps.mean() > 0.3  # not piled up near zero


def test_mmd_above_cap_subsamples_or_uses_random_features():
    rng = np.random.default_rng(5)
    ref, cur = snap(rng.normal(size=(300, 16)), "r"), snap(rng.normal(size=(300, 16)), "c")
    f = mmd(ref, cur, seed=0, permutations=50, max_per_side=100, large="subsample", device="cpu")[0]
    assert f.details["n_reference_tested"] == 100 and f.details["n_current_tested"] == 100
    assert f.details["method"] == "exact"
    f = mmd(ref, cur, seed=0, permutations=50, max_per_side=100, device="cpu")[0]  # default: random features
    assert f.details["method"] == "rff" and f.details["n_current_tested"] == 300


def test_classifier_finds_the_shifted_records():
    rng = np.random.default_rng(6)
    ref = snap(rng.normal(size=(400, 16)), "r")
    y = rng.normal(size=(400, 16))
    y[:80, 3] += 4.0  # 80 planted atypical records
    cur = snap(y, "c")
    f = classifier(ref, cur, seed=0)[0]
    assert f.p_value < 1e-4 and f.statistic > 0.55
    planted = set(cur.ids[:80])
    hits = [i for i in f.record_ids if i in planted]
    assert len(hits) / max(1, len(f.record_ids)) >= 0.8 and len(hits) >= 20


@pytest.mark.parametrize("seed", range(3))
def test_classifier_null_not_significant(seed):
    rng = np.random.default_rng(100 + seed)
    f = classifier(snap(rng.normal(size=(200, 16)), "r"), snap(rng.normal(size=(200, 16)), "c"), seed=seed)[0]
    assert f.p_value > 0.001


def test_mmd_min_records_is_where_a_small_p_becomes_possible() -> None:
    """min_records = 7: with 6 records a side the 462 labellings (up to swapping sides) keep
    even perfectly separated samples above 1e-3; with 7 (1,716 labellings) they go below."""
    from auditor.checks import registry

    assert registry()["mmd"].min_records == 7
    rng = np.random.default_rng(0)
    for m, below in ((6, False), (7, True)):
        x = rng.normal(size=(m, 16)) + 5.0
        y = rng.normal(size=(m, 16)) - 5.0
        f = mmd(snap(x, "r"), snap(y, "c"), seed=1, permutations=49999, device="cpu")[0]
        assert (f.p_value < 1e-3) is below, (m, f.p_value)


def test_classifier_min_records_is_where_a_small_p_becomes_possible() -> None:
    """min_records = 9: perfect separation over stratified folds reaches p < 1e-3 at 9 a side, not at 8."""
    from auditor.checks import registry

    assert registry()["classifier"].min_records == 9
    rng = np.random.default_rng(0)
    for m, below in ((8, False), (9, True)):
        x = rng.normal(size=(m, 16)) * 0.01 + np.eye(16)[0]
        y = rng.normal(size=(m, 16)) * 0.01 + np.eye(16)[1]
        f = classifier(snap(x, "r"), snap(y, "c"), seed=0)[0]
        assert f.statistic == 1.0 and (f.p_value < 1e-3) is below, (m, f.p_value)
