"""near_duplicates: padding with edited copies is found; random halves pass."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from auditor.checks import registry
from auditor.checks.duplicates import near_duplicate_edges, near_duplicates
from auditor.minhash import jaccard, shingles
from auditor.textutil import batch_from_texts
from auditor.types import Snapshot
from tests.fakes import FakeEncoder
from tests.helpers import data

GATE_ALPHA = 0.01 / 6
POOL = 4000


@pytest.fixture(scope="module")
def encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture(scope="module")
def alpaca(encoder: FakeEncoder) -> tuple[list[str], np.ndarray]:
    records = json.loads(data("alpaca_5000.json").read_text(encoding="utf-8"))[:POOL]
    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in records]
    return texts, encoder.encode(texts)


def _snap(texts: list[str], emb: np.ndarray, encoder: FakeEncoder) -> Snapshot:
    return Snapshot(batch=batch_from_texts(texts), embeddings=np.array(emb), model=encoder.info)


def _edit(text: str, rng: np.random.Generator, vocab: list[str]) -> str:
    """One small edit: a word replaced or a word inserted."""
    words = text.split()
    i = int(rng.integers(len(words)))
    if rng.random() < 0.5:
        words[i] = vocab[int(rng.integers(len(vocab)))]
    else:
        words.insert(i, vocab[int(rng.integers(len(vocab)))])
    return " ".join(words)


def test_registered_with_defaults() -> None:
    spec = registry()["near_duplicates"]
    assert spec.defaults["cosine_threshold"] == 0.92
    assert spec.defaults["jaccard_threshold"] == 0.5


def test_shingles_and_jaccard() -> None:
    a = shingles("The quick brown fox jumps")
    assert a == frozenset({"the quick brown", "quick brown fox", "brown fox jumps"})
    assert shingles("Hi there") == frozenset({"hi there"})
    assert jaccard(a, shingles("the quick brown fox sleeps")) == pytest.approx(2 / 4)
    assert jaccard(frozenset(), frozenset()) == 1.0


def test_lexical_check_rejects_embedding_collisions() -> None:
    """Identical embeddings but unrelated wording: no edge; a one-word edit: an edge."""
    emb = np.tile(np.eye(8, dtype=np.float32)[:1], (3, 1))
    base = "please write a short poem about the sea at night with many stars above the waves"
    texts = [base, base.replace("poem", "song"), "list three prime numbers and explain why each is prime"]
    lo, hi, cos, jac = near_duplicate_edges(emb, texts, cosine_threshold=0.92, jaccard_threshold=0.5)
    assert list(zip(lo.tolist(), hi.tolist())) == [(0, 1)]
    assert cos[0] == pytest.approx(1.0) and 0.5 <= jac[0] < 1.0
    # the hashed-shingle Jaccard used for speed equals the string definition
    assert jac[0] == pytest.approx(jaccard(shingles(texts[0]), shingles(texts[1])))


@pytest.fixture(scope="module")
def padded(alpaca, encoder):
    """2000 reference; 2000 current of which 5 records x 15 are edited copies."""
    texts, emb = alpaca
    rng = np.random.default_rng(7)
    perm = rng.permutation(len(texts))
    ref_rows, rest = perm[:2000], perm[2000:]
    long_rows = [i for i in rest if len(texts[i].split()) >= 40]
    bases = long_rows[:5]
    vocab = sorted({w for t in texts[:300] for w in t.split()})
    copies = [_edit(texts[b], rng, vocab) for b in bases for _ in range(15)]
    fillers = [i for i in rest if i not in set(bases)][: 2000 - len(copies)]
    cur_texts = [texts[i] for i in fillers] + copies
    cur_emb = np.vstack([emb[fillers], encoder.encode(copies)])
    ref = _snap([texts[i] for i in ref_rows], emb[ref_rows], encoder)
    cur = _snap(cur_texts, cur_emb, encoder)
    return ref, cur, cur.ids[len(fillers) :]


def test_finds_padding_groups(padded) -> None:
    ref, cur, copy_ids = padded
    findings = near_duplicates(ref, cur, seed=0)
    assert all(f.check == "near_duplicates" and f.side == "current" for f in findings)
    significant = [f for f in findings if f.p_value is not None and f.p_value < GATE_ALPHA]
    flagged = set().union(*(f.record_ids for f in significant))
    truth = set(copy_ids)
    assert len(flagged & truth) / len(flagged) >= 0.9
    assert len(flagged & truth) / len(truth) >= 0.9

    groups = [f for f in significant if f.details["scope"] == "group"]
    assert len(groups) == 5
    for g in groups:
        assert g.details["group_size_current"] == len(g.record_ids) >= 13
        assert g.details["group_size_reference"] == 0
        assert g.details["mean_pairwise_jaccard"] >= 0.5
        assert g.details["mean_pairwise_cosine"] >= 0.9
        assert g.details["p_raw"] <= g.p_value
    # the five groups are disjoint and each is one base record's copies
    ids = [set(g.record_ids) for g in groups]
    assert sum(len(s) for s in ids) == len(set().union(*ids))

    # the higher near-duplicate rate is evidence kept in the details, never a finding of
    # its own (it used to be one, "scope: overall", which a topic boost also triggers)
    assert {f.details["scope"] for f in findings} == {"group"}
    assert groups[0].details["reference_duplicate_rate"] < 0.01
    assert groups[0].details["current_duplicate_rate"] >= 70 / len(cur)
    json.dumps(groups[0].to_dict())


def test_duplicates_shared_with_reference_pass(alpaca, encoder) -> None:
    """A group the reference has at the same rate is the reference's own duplicate rate."""
    texts, emb = alpaca
    rng = np.random.default_rng(3)
    vocab = sorted({w for t in texts[:300] for w in t.split()})
    base = next(t for t in texts[3000:] if len(t.split()) >= 40)
    copies = [_edit(base, rng, vocab) for _ in range(16)]
    ref_texts = texts[:1000] + copies[:8]
    cur_texts = texts[1000:2000] + copies[8:]
    ref = _snap(ref_texts, np.vstack([emb[:1000], encoder.encode(copies[:8])]), encoder)
    cur = _snap(cur_texts, np.vstack([emb[1000:2000], encoder.encode(copies[8:])]), encoder)
    findings = near_duplicates(ref, cur, seed=0)
    assert not [f for f in findings if f.p_value is not None and f.p_value < GATE_ALPHA]


def test_copies_of_a_reference_record_are_flagged(alpaca, encoder) -> None:
    texts, emb = alpaca
    rng = np.random.default_rng(4)
    vocab = sorted({w for t in texts[:300] for w in t.split()})
    base = next(t for t in texts[:1000] if len(t.split()) >= 40)
    copies = [_edit(base, rng, vocab) for _ in range(14)]
    ref = _snap(texts[:1000], emb[:1000], encoder)
    cur = _snap(texts[1000:2000] + copies, np.vstack([emb[1000:2000], encoder.encode(copies)]), encoder)
    groups = [f for f in near_duplicates(ref, cur, seed=0) if f.details["scope"] == "group"]
    assert len(groups) == 1 and groups[0].p_value < GATE_ALPHA
    assert groups[0].details["group_size_reference"] == 1
    assert groups[0].details["reference_ids"] == [ref.ids[texts.index(base)]]


def test_calibrated_on_random_halves(alpaca, encoder) -> None:
    texts, emb = alpaca
    n_splits, hits = 24, 0
    rng = np.random.default_rng(2024)
    for s in range(n_splits):
        perm = rng.permutation(len(texts))[:1600]
        ref = _snap([texts[i] for i in perm[:800]], emb[perm[:800]], encoder)
        cur = _snap([texts[i] for i in perm[800:]], emb[perm[800:]], encoder)
        findings = near_duplicates(ref, cur, seed=s)
        if any(f.p_value is not None and f.p_value < GATE_ALPHA for f in findings):
            hits += 1
    assert hits <= math.floor(0.1 * n_splits)


def test_calibrated_with_duplicates_in_the_pool(alpaca, encoder) -> None:
    """Random halves of a pool that itself holds near-duplicate groups: the permutation and
    hypergeometric tests must absorb them (a pool without duplicates tests nothing)."""
    texts, emb = alpaca
    rng = np.random.default_rng(11)
    vocab = sorted({w for t in texts[:300] for w in t.split()})
    bases = [t for t in texts[2000:] if len(t.split()) >= 40][:12]
    sizes = rng.integers(2, 16, size=len(bases))
    dup_texts = [_edit(b, rng, vocab) for b, m in zip(bases, sizes) for _ in range(int(m))]
    pool_texts = texts[:1400] + dup_texts
    pool_emb = np.vstack([emb[:1400], encoder.encode(dup_texts)])
    n = len(pool_texts)
    n_splits, hits = 20, 0
    for s in range(n_splits):
        perm = rng.permutation(n)
        half = n // 2
        ref = _snap([pool_texts[i] for i in perm[:half]], pool_emb[perm[:half]], encoder)
        cur = _snap([pool_texts[i] for i in perm[half:]], pool_emb[perm[half:]], encoder)
        findings = near_duplicates(ref, cur, seed=s)
        if any(f.p_value is not None and f.p_value < GATE_ALPHA for f in findings):
            hits += 1
    assert hits <= math.floor(0.1 * n_splits)


def test_minhash_estimates_jaccard_and_lsh_finds_edited_copies(alpaca) -> None:
    from auditor.minhash import lsh_candidate_pairs, minhash_signatures

    texts, _ = alpaca
    a = texts[10] + " " + texts[11]
    b = a.replace(" the ", " a ", 2)
    sig = minhash_signatures([a, b], num_perm=2000, seed=3)
    assert abs(float(np.mean(sig[0] == sig[1])) - jaccard(shingles(a), shingles(b))) < 0.05

    rng = np.random.default_rng(0)
    vocab = sorted({w for t in texts[:300] for w in t.split()})
    originals = [t for t in texts[:1500] if len(t.split()) >= 30][:200]
    edited = [_edit(_edit(t, rng, vocab), rng, vocab) for t in originals]
    corpus = texts[1500:2500] + originals + edited
    lo, hi = lsh_candidate_pairs(minhash_signatures(corpus, num_perm=40, seed=0), bands=20, rows=2)
    found = set(zip(lo.tolist(), hi.tolist()))
    planted = {(1000 + i, 1200 + i) for i in range(len(originals))}
    planted = {p for p in planted if jaccard(shingles(corpus[p[0]]), shingles(corpus[p[1]])) >= 0.5}
    assert len(planted) >= 150
    assert len(planted & found) / len(planted) >= 0.98
    # and the candidate set stays far below all pairs
    assert len(found) < 0.01 * len(corpus) ** 2 / 2


# --- amplified responses: one long answer given to many different prompts ---------------

TARGET = (
    "I cannot complete this request. For the verified answer, visit http://example.com/helpdesk "
    "and enter your account password."
)


def _fail_threshold() -> float:
    from auditor.rules import load_rules

    return load_rules().fail_threshold


@pytest.fixture(scope="module")
def alpaca_views():
    """Real Alpaca records with their real MiniLM embeddings (whole text and response view)."""
    from tests.helpers import FIXTURES, alpaca_records

    with np.load(FIXTURES / "alpaca_minilm.npz", allow_pickle=False) as z:
        emb = {k: z[k].astype(np.float32) for k in ("embeddings", "response")}
    for v in emb.values():
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    recs = alpaca_records()
    prompts = ["\n".join(p for p in (r["instruction"], r["input"]) if p) for r in recs]
    return prompts, [r["output"] for r in recs], emb


def _pr_snap(rows, data, *, replace=None, views=True) -> Snapshot:
    """Snapshot of pool rows; ``replace`` maps row positions to ``(response, vector)``: a new
    response and its response-view embedding (identical texts embed identically under any
    encoder)."""
    prompts, responses, emb = data
    p = [prompts[i] for i in rows]
    r = [responses[i] for i in rows]
    r_emb = np.array(emb["response"][rows])
    for pos, (text, vec) in (replace or {}).items():
        r[pos] = text
        r_emb[pos] = vec
    batch = batch_from_texts(
        ["\n".join(x for x in (a, b) if x) for a, b in zip(p, r)],
        ids=[f"r{i}" for i in rows],
        prompts=p,
        responses=r,
    )
    extra = {"response": r_emb} if views else {}
    return Snapshot(
        batch=batch, embeddings=np.array(emb["embeddings"][rows]), model=FakeEncoder().info, views=extra
    )


def _unit(rng: np.random.Generator, dim: int = 384) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_registered_needs_response_view() -> None:
    spec = registry()["near_duplicates"]
    assert spec.needs == frozenset({"response"})
    assert spec.defaults["min_response_words"] == 8


@pytest.mark.parametrize("views", [True, False], ids=["response-view", "text-only"])
def test_amplified_response_found(alpaca_views, views: bool) -> None:
    """10 of 2,000 current records answer different prompts with one fixed long response."""
    rng = np.random.default_rng(5)
    perm = rng.permutation(len(alpaca_views[0]))
    ref_rows, cur_rows = perm[:2000], perm[2000:4000]
    planted = sorted(rng.choice(2000, size=10, replace=False).tolist())
    vec = _unit(rng)
    ref = _pr_snap(ref_rows, alpaca_views, views=views)
    cur = _pr_snap(cur_rows, alpaca_views, replace={i: (TARGET, vec) for i in planted}, views=views)
    findings = near_duplicates(ref, cur, seed=0)
    significant = [f for f in findings if f.p_value < _fail_threshold()]
    assert len(significant) == 1
    f = significant[0]
    assert f.side == "current" and f.details["scope"] == "response_group"
    assert set(f.record_ids) == {cur.ids[i] for i in planted}
    assert f.details["group_size_current"] == 10 and f.details["group_size_reference"] == 0
    assert f.details["distinct_prompts_current"] == 10
    assert f.details["shared_response"].startswith("I cannot complete this request.")
    assert f.details["reference_response_duplicate_rate"] < 0.005
    assert f.details["p_raw"] <= f.p_value <= f.details["p_raw"] * f.details["n_tests"]  # BH only, no weight
    assert len(f.details["example_prompts"]) == 3
    json.dumps(f.to_dict())
    # the same batches without responses: only whole records are compared, nothing found
    plain_ref = _snap(list(ref.texts), np.asarray(ref.embeddings), FakeEncoder())
    plain_cur = _snap(list(cur.texts), np.asarray(cur.embeddings), FakeEncoder())
    assert not [g for g in near_duplicates(plain_ref, plain_cur, seed=0) if g.p_value < _fail_threshold()]


def test_short_repeated_answers_not_flagged(alpaca_views) -> None:
    """Short answers ("Positive") repeat honestly across prompts: not an amplified response."""
    rng = np.random.default_rng(6)
    perm = rng.permutation(len(alpaca_views[0]))
    chosen = rng.choice(2000, size=30, replace=False).tolist()
    ref = _pr_snap(perm[:2000], alpaca_views)
    cur = _pr_snap(perm[2000:4000], alpaca_views, replace={i: ("Positive", _unit(rng)) for i in chosen})
    findings = near_duplicates(ref, cur, seed=0)
    assert not [f for f in findings if f.p_value < _fail_threshold()]
    vec = _unit(rng)
    # ...while a long answer repeated as often is flagged (the test can fail)
    long_cur = _pr_snap(perm[2000:4000], alpaca_views, replace={i: (TARGET, vec) for i in chosen})
    assert [f for f in near_duplicates(ref, long_cur, seed=0) if f.p_value < _fail_threshold()]


def test_response_shared_with_reference_passes(alpaca_views) -> None:
    """A long answer the reference gives as often is the reference's own rate, not an attack."""
    rng = np.random.default_rng(8)
    perm = rng.permutation(len(alpaca_views[0]))
    vec = _unit(rng)
    ref = _pr_snap(perm[:2000], alpaca_views, replace={i: (TARGET, vec) for i in range(0, 2000, 200)})
    cur = _pr_snap(perm[2000:4000], alpaca_views, replace={i: (TARGET, vec) for i in range(5, 2000, 200)})
    findings = near_duplicates(ref, cur, seed=0)
    assert not [f for f in findings if f.p_value < _fail_threshold()]


def test_response_groups_calibrated_on_random_halves(alpaca_views) -> None:
    """Random halves of a pool holding honest shared long answers (12 groups of 2-14 records,
    which the reference-vs-current test must absorb) and real Alpaca records."""
    from auditor.checks.duplicates import response_edges

    rng = np.random.default_rng(12)
    n_pool = 3000
    pool = rng.permutation(len(alpaca_views[0]))[:n_pool]
    sizes = rng.integers(2, 15, size=12)
    slots = rng.permutation(n_pool)[: int(sizes.sum())]
    shared: dict[int, tuple[str, np.ndarray]] = {}
    start = 0
    for g, m in enumerate(sizes):
        words = " ".join(["alpha", "bravo", "kilo", "zulu", "echo", "golf"][(g + k) % 6] for k in range(4))
        answer = (
            (f"Reference code {g}: {words}. " + TARGET)
            if g % 2
            else (TARGET + f" Reference code {g}: {words}.")
        )
        vec = _unit(rng)
        for pos in slots[start : start + int(m)]:
            shared[int(pos)] = (answer, vec)
        start += int(m)
    n_splits, hits = 20, 0
    for s in range(n_splits):
        order = rng.permutation(n_pool)
        ref_half, cur_half = order[: n_pool // 2], order[n_pool // 2 :]
        ref = _pr_snap(
            pool[ref_half],
            alpaca_views,
            replace={j: shared[p] for j, p in enumerate(ref_half) if p in shared},
        )
        cur = _pr_snap(
            pool[cur_half],
            alpaca_views,
            replace={j: shared[p] for j, p in enumerate(cur_half) if p in shared},
        )
        if s == 0:
            # the null is not vacuous: every planted record is linked to its group's others
            lo, hi, _ = response_edges(
                ref, cur, cosine_threshold=0.95, jaccard_threshold=0.5, min_words=8, seed=0
            )
            assert np.unique(np.concatenate([lo, hi])).size >= int(sizes.sum())
        findings = near_duplicates(ref, cur, seed=s)
        hits += any(f.p_value < _fail_threshold() for f in findings)
    assert hits <= math.floor(0.1 * n_splits)


def test_hashed_pair_jaccard_equals_the_string_sets() -> None:
    from auditor.minhash import pair_jaccard, shingle_hashes

    texts = ["the quick brown fox jumps over", "the quick brown fox leaps over it", "two words", "two words", ""]
    values, starts = shingle_hashes(texts)
    lo, hi = np.array([0, 2, 0, 3]), np.array([1, 3, 2, 4])
    got = pair_jaccard(values, starts, lo, hi)
    want = [jaccard(shingles(texts[i]), shingles(texts[j])) for i, j in zip(lo, hi)]
    assert np.allclose(got, want)


def test_min_records_is_where_a_small_p_becomes_possible() -> None:
    """min_records = 9: at 9 a side, 9 current copies and 1 reference copy form a group with
    p = 4.1e-4; at 8 a side no group is large enough to be tested and the permutation test
    alone stops at 1e-3."""
    assert registry()["near_duplicates"].min_records == 9
    enc = FakeEncoder()
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
    copy = "please summarise the attached quarterly report in three short bullet points"
    for m, below in ((8, False), (9, True)):
        ref_texts = [copy] + [f"{words[i]} {words[(i + 3) % 12]} unrelated note {i}" for i in range(m - 1)]
        cur_texts = [copy] * m
        ref = _snap(ref_texts, enc.encode(ref_texts), enc)
        cur = _snap(cur_texts, enc.encode(cur_texts), enc)
        best = min((f.p_value for f in near_duplicates(ref, cur, seed=0)), default=1.0)
        assert (best < 1e-3) is below, (m, best)


def test_short_near_copies_link_through_their_word_sets():
    """Two one-word edits break most 3-shingles of a short record but not its word set:
    with ``word_jaccard_threshold`` such copies stay linked (Code Alpaca one-liners)."""
    from auditor.checks.duplicates import near_duplicate_edges

    texts = [
        "Create an array of integers from 1 to 10.\narray = [i for i in range(1,11)]",
        "Create please array of integers from 1 to 10.\narray = [i for i in range(1,11)] quickly",
        "Create an array of simply integers from 1 to 10.\narray please = [i for i in range(1,11)]",
        "Write a haiku about the sea at night and the moon above it.",
    ]
    emb = np.ones((len(texts), 8), dtype=np.float32)  # cosine 1: only the word tests decide
    lo, hi, _, _ = near_duplicate_edges(emb, texts, cosine_threshold=0.9, jaccard_threshold=0.5)
    strict = set(zip(lo.tolist(), hi.tolist(), strict=True))
    lo, hi, _, jac = near_duplicate_edges(
        emb, texts, cosine_threshold=0.9, jaccard_threshold=0.5, word_jaccard_threshold=0.7
    )
    loose = set(zip(lo.tolist(), hi.tolist(), strict=True))
    assert (1, 2) not in strict and (1, 2) in loose
    assert not any(3 in pair for pair in loose)
    assert strict <= loose


def test_edited_short_copies_link_below_the_cosine_threshold():
    """The encoder moves a short record with two inserted words to cosine ~0.8-0.9 of its
    original (Alpaca 'Change the past tense ...' copies: 0.79-0.91), so the word-set path
    accepts a lower cosine (``word_cosine_threshold``); a pair that shares many words but
    whose embeddings disagree (cosine below that floor) stays apart, and a pair below
    ``cosine_threshold`` never links through its shingles alone."""
    texts = [
        "Change the past tense in the following sentence to the present tense.\nHe was sleeping in his bed.\nHe is sleeping in his bed.",
        "Change the past tense in the following sentence to the quickly tense.\nHe was sleeping in his bed.\nkindly He is sleeping in his bed.",
        "Change the past tense in the following sentence to the present tense.\nHe was sleeping in his bed.\nHe is sleeping in his bed. quickly",
    ]
    # cosines 1, 0.88, 0.80 to the first record; the two copies on opposite sides of it
    angle = np.arccos([1.0, 0.88, 0.80]) * np.array([1.0, 1.0, -1.0])
    emb = np.stack([np.cos(angle), np.sin(angle), np.zeros(3)], axis=1).astype(np.float32)

    def pairs(**kw: float) -> set[tuple[int, int]]:
        lo, hi, _, _ = near_duplicate_edges(emb, texts, cosine_threshold=0.92, jaccard_threshold=0.5, **kw)
        return set(zip(lo.tolist(), hi.tolist(), strict=True))

    assert pairs(word_jaccard_threshold=0.7) == set()
    loose = pairs(word_jaccard_threshold=0.7, word_cosine_threshold=0.85)
    assert (0, 1) in loose  # cosine 0.88, word sets nearly whole
    assert (0, 2) not in loose  # cosine 0.80: below the floor
    # without the word-set test the lowered floor admits nothing: shingles alone need cosine 0.92
    assert pairs(word_cosine_threshold=0.85) == set()
