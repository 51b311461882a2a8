"""Round statistics: what changed between curation rounds, and whether a chain drifts.

Rounds overlap: round 2 keeps most of round 1.  Two-sample tests that treat two rounds as
independent samples stay valid under overlap (shared records cancel, so they are
conservative) but lose power, and a chain of rounds that each keep most of their parent is
a random walk, whose spurious "trends" fool any test that pools the rounds as independent
samples.  Every test here instead uses the *membership* null hypothesis:

    H0: which rounds a record belongs to does not depend on its content.

Let U be the distinct records (by content hash) of all rounds compared and M the U x R
matrix of how often each is in each round.  Under H0 the embeddings are exchangeable
across the rows of M, so recomputing a statistic with M's rows permuted (keeping every
round's size, every overlap and the random-walk structure of the chain) gives an exact
permutation p-value, (k+1)/(B+1).  For per-cluster share changes the same null gives an
exact multivariate-hypergeometric test (Fisher's exact test when the rounds share nothing).

- ``diff_records``: added / removed / kept records by content hash (a re-id hides nothing);
- ``cluster_shift``: basis clusters that gained or lost share between two rounds;
- ``round_drift``: mean-shift permutation test between two rounds under H0;
- ``trend``: every round against the root and against its parent, and whether the rounds
  keep moving in one direction.

The curation commands that grade these into Reports live in ``auditor/curation.py``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import gammaln

from auditor.stats import benjamini_hochberg, fisher_exact_greater, fisher_exact_less, permutation_p_value
from auditor.types import AuditorError, Batch, Finding, Snapshot

EXAMPLE_CHARS = 200
TREND_CHECKS: tuple[str, ...] = ("trend_root_drift", "trend_parent_drift", "trend_direction")
DIFF_CHECKS: tuple[str, ...] = ("round_drift", "cluster_shift", "dedup_resolution")


def _batch(x: Snapshot | Batch) -> Batch:
    return x.batch if isinstance(x, Snapshot) else x


def clip_example(text: str) -> str:
    """An example text for a finding, cut to ``EXAMPLE_CHARS``."""
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "\u2026"


# --------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class RecordDiff:
    """Round B relative to round A, by content hash (multiset semantics: a text twice in
    A and once in B is one kept and one removed).

    Indices point into A (``removed``, ``kept_a``) or B (``added``, ``kept_b``);
    ``kept_a[i]`` and ``kept_b[i]`` are the same content.  ``reided`` counts kept records
    whose id changed.
    """

    added: tuple[int, ...]
    removed: tuple[int, ...]
    kept_a: tuple[int, ...]
    kept_b: tuple[int, ...]
    reided: int

    def to_dict(self) -> dict[str, int]:
        return {
            "n_added": len(self.added),
            "n_removed": len(self.removed),
            "n_kept": len(self.kept_a),
            "n_reided": self.reided,
        }


def diff_records(a: Snapshot | Batch, b: Snapshot | Batch) -> RecordDiff:
    """Which records of B are new, which of A are gone, which were kept (by content)."""
    ba, bb = _batch(a), _batch(b)
    pending: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(ba.hashes):
        pending[h].append(i)
    added: list[int] = []
    kept_a: list[int] = []
    kept_b: list[int] = []
    for j, h in enumerate(bb.hashes):
        slots = pending.get(h)
        if slots:
            kept_a.append(slots.pop(0))
            kept_b.append(j)
        else:
            added.append(j)
    removed = sorted(i for slots in pending.values() for i in slots)
    reided = sum(ba.ids[i] != bb.ids[j] for i, j in zip(kept_a, kept_b, strict=True))
    return RecordDiff(tuple(added), tuple(removed), tuple(kept_a), tuple(kept_b), int(reided))


# --------------------------------------------------------------------------------------
# cluster shares


def assign_clusters(emb: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """The nearest basis centroid (by cosine) of each row."""
    from auditor.index import knn

    if len(emb) == 0:
        return np.zeros(0, dtype=np.int64)
    return knn(basis, emb, 1)[1][:, 0].astype(np.int64)


def share_change_test(
    m_c: int, n_ao: int, n_k: int, n_bo: int, a_obs: int, b_obs: int
) -> tuple[float, float, float]:
    """Exact test that a cluster's share changed from round A to round B.

    Units are removed records (A only, n_ao), kept ones (both, n_k) and added ones (B only,
    n_bo); m_c of them are in the cluster.  Under the membership null the cluster's units
    fall into the three groups as a multivariate hypergeometric draw; with a = cluster
    units removed and b = added, the share change is (m_c - a)/n_B - (m_c - b)/n_A.  The
    p-values sum the exact probabilities of all (a, b) at least as extreme: two-sided
    (|change|), gain (change >=) and loss (change <=).  With no kept records this is
    Fisher's exact test; overlap is what it adds.
    """

    def lchoose(n: np.ndarray | int, k: np.ndarray) -> np.ndarray:
        return gammaln(np.asarray(n) + 1.0) - gammaln(k + 1.0) - gammaln(np.asarray(n) - k + 1.0)

    u = n_ao + n_k + n_bo
    n_a, n_b = n_ao + n_k, n_k + n_bo

    def window(n_grp: int, obs: int) -> np.ndarray:
        # the marginal of a (or b) is hypergeometric; beyond 12 SDs its mass is < 1e-30,
        # so the grid keeps that window (and the observed value) without changing p
        lo_sup, hi_sup = max(0, m_c - (u - n_grp)), min(m_c, n_grp)
        mean = m_c * n_grp / u
        sd = math.sqrt(max(m_c * (n_grp / u) * (1 - n_grp / u) * (u - m_c) / max(u - 1, 1), 0.0))
        lo = max(lo_sup, min(obs, int(math.floor(mean - 12 * sd - 2))))
        hi = min(hi_sup, max(obs, int(math.ceil(mean + 12 * sd + 2))))
        return np.arange(lo, hi + 1, dtype=np.float64)

    a = window(n_ao, a_obs)[:, None]
    b = window(n_bo, b_obs)[None, :]
    k = m_c - a - b
    valid = (k >= 0) & (k <= n_k)
    logp = lchoose(n_ao, a) + lchoose(n_bo, b) + lchoose(n_k, np.clip(k, 0, n_k)) - lchoose(u, np.array(m_c))
    prob = np.where(valid, np.exp(logp), 0.0)
    delta = (m_c - a) / max(n_b, 1) - (m_c - b) / max(n_a, 1)
    d_obs = (m_c - a_obs) / max(n_b, 1) - (m_c - b_obs) / max(n_a, 1)
    tol = 1e-12
    p_two = float(prob[np.abs(delta) >= abs(d_obs) - tol].sum())
    p_gain = float(prob[delta >= d_obs - tol].sum())
    p_loss = float(prob[delta <= d_obs + tol].sum())
    return min(1.0, p_two), min(1.0, p_gain), min(1.0, p_loss)


def cluster_shift(
    a: Snapshot,
    b: Snapshot,
    basis: np.ndarray | None = None,
    *,
    a_clusters: np.ndarray | None = None,
    b_clusters: np.ndarray | None = None,
    report_q: float = 0.05,
    max_ids: int = 200,
) -> list[Finding]:
    """Basis clusters whose share changed from round A to round B.

    Per cluster, an exact test of the share change under the membership null that
    accounts for the records the rounds share (``share_change_test``; Fisher's exact
    test when they share none), two-sided, Benjamini-Hochberg across clusters.  Details
    carry the evidence: added and removed counts against their expectations, and the
    one-sided Fisher tests of "removed more from this cluster than kept" and "added more
    to it than A had" (a churned cluster, emptied and refilled, shows both while its share
    test stays quiet).  One finding per cluster with q <= ``report_q``; otherwise one
    info finding carrying the smallest q.

    Cluster assignments come from ``a_clusters``/``b_clusters`` when given (the store
    records them), else from ``basis`` (centroids, nearest by cosine).
    """
    if a_clusters is None or b_clusters is None:
        if basis is None:
            raise ValueError("cluster_shift needs a basis or both cluster assignments")
        a_clusters = assign_clusters(a.embeddings, basis) if a_clusters is None else a_clusters
        b_clusters = assign_clusters(b.embeddings, basis) if b_clusters is None else b_clusters
    ca = np.asarray(a_clusters, dtype=np.int64)
    cb = np.asarray(b_clusters, dtype=np.int64)
    k = int(max(ca.max(initial=-1), cb.max(initial=-1)) + 1)
    if basis is not None:
        k = max(k, len(basis))
    d = diff_records(a, b)
    added = np.asarray(d.added, dtype=np.int64)
    removed = np.asarray(d.removed, dtype=np.int64)
    kept = np.asarray(d.kept_a, dtype=np.int64)
    n_a, n_b = len(a), len(b)
    n_add, n_rem, n_kept = len(added), len(removed), len(kept)

    a_c = np.bincount(ca, minlength=k)
    b_c = np.bincount(cb, minlength=k)
    add_c = np.bincount(cb[added], minlength=k) if n_add else np.zeros(k, dtype=np.int64)
    rem_c = np.bincount(ca[removed], minlength=k) if n_rem else np.zeros(k, dtype=np.int64)
    kept_c = np.bincount(ca[kept], minlength=k) if n_kept else np.zeros(k, dtype=np.int64)

    rows: list[dict[str, Any]] = []
    for c in range(k):
        m_c = int(rem_c[c] + kept_c[c] + add_c[c])
        if m_c == 0 or (n_add == 0 and n_rem == 0):
            continue
        p_two, p_gain, p_loss = share_change_test(m_c, n_rem, n_kept, n_add, int(rem_c[c]), int(add_c[c]))
        p_added = p_removed = None
        if n_add and n_a:
            ta = (int(add_c[c]), int(a_c[c]), int(n_add - add_c[c]), int(n_a - a_c[c]))
            p_added = {"more": fisher_exact_greater(*ta), "fewer": fisher_exact_less(*ta)}
        if n_rem and n_kept:
            tr = (int(rem_c[c]), int(kept_c[c]), int(n_rem - rem_c[c]), int(n_kept - kept_c[c]))
            p_removed = {"more": fisher_exact_greater(*tr), "fewer": fisher_exact_less(*tr)}
        rows.append(
            {
                "cluster": c,
                "share_a": float(a_c[c] / n_a) if n_a else 0.0,
                "share_b": float(b_c[c] / n_b) if n_b else 0.0,
                "n_a": int(a_c[c]),
                "n_b": int(b_c[c]),
                "added": int(add_c[c]),
                "removed": int(rem_c[c]),
                "expected_added": float(n_add * m_c / (n_rem + n_kept + n_add)),
                "expected_removed": float(n_rem * m_c / (n_rem + n_kept + n_add)),
                "p_gain": p_gain,
                "p_loss": p_loss,
                "p_added_fisher": p_added,
                "p_removed_fisher": p_removed,
                "p_raw": p_two,
                "direction": "gained" if b_c[c] / max(n_b, 1) > a_c[c] / max(n_a, 1) else "lost",
            }
        )
    if not rows:
        return []
    q = benjamini_hochberg([r["p_raw"] for r in rows])
    for row, qq in zip(rows, q, strict=True):
        row["q"] = float(qq)

    findings: list[Finding] = []
    for row in sorted(rows, key=lambda r: (r["q"], r["cluster"])):
        if row["q"] > report_q:
            continue
        c = row["cluster"]
        gained = row["direction"] == "gained"
        if gained:
            idx = [int(j) for j in added if cb[j] == c] or [int(j) for j in np.flatnonzero(cb == c)]
            ids, texts = [b.ids[j] for j in idx], [b.texts[j] for j in idx]
        else:
            idx = [int(i) for i in removed if ca[i] == c] or [int(i) for i in np.flatnonzero(ca == c)]
            ids, texts = [a.ids[i] for i in idx], [a.texts[i] for i in idx]
        eps = 0.5 / max(n_a, n_b, 1)
        findings.append(
            Finding(
                check="cluster_shift",
                summary=(
                    f"cluster {c} {row['direction']} share: {row['share_a']:.1%} -> {row['share_b']:.1%} "
                    f"({row['added']} added vs {row['expected_added']:.1f} expected, "
                    f"{row['removed']} removed vs {row['expected_removed']:.1f} expected)"
                ),
                side="current" if gained else "reference",
                record_ids=tuple(ids[:max_ids]),
                statistic=row["share_b"] - row["share_a"],
                p_value=row["q"],
                effect_size=math.log2((row["share_b"] + eps) / (row["share_a"] + eps)),
                details={
                    **row,
                    "n_clusters_tested": len(rows),
                    "examples": [clip_example(t) for t in texts[:5]],
                },
            )
        )
    if not findings:
        best = min(rows, key=lambda r: r["q"])
        findings.append(
            Finding(
                check="cluster_shift",
                summary=f"no basis cluster changed share beyond chance ({len(rows)} clusters tested, "
                f"smallest q={best['q']:.3g} for cluster {best['cluster']})",
                side="current",
                statistic=best["share_b"] - best["share_a"],
                p_value=best["q"],
                details={"n_clusters_tested": len(rows), "smallest": best},
            )
        )
    return findings


def cluster_table(a_clusters: np.ndarray, b_clusters: np.ndarray, k: int) -> list[dict[str, Any]]:
    """Share of each basis cluster in two rounds (for reports)."""
    ca = np.bincount(np.asarray(a_clusters, dtype=np.int64), minlength=k)
    cb = np.bincount(np.asarray(b_clusters, dtype=np.int64), minlength=k)
    na, nb = max(1, int(ca.sum())), max(1, int(cb.sum()))
    return [
        {"cluster": c, "n_a": int(ca[c]), "n_b": int(cb[c]), "share_a": ca[c] / na, "share_b": cb[c] / nb}
        for c in range(k)
    ]


# --------------------------------------------------------------------------------------
# the membership permutation engine

# Distinct records are centred and projected on their top principal components before
# testing.  The projection is computed from all distinct records pooled, each once, so it
# is the same under every permutation (the tests stay exact); it keeps the directions that
# carry the records' variance and drops hundreds of near-empty ones, which makes the
# permutations several times cheaper without changing the mean-shift statistics much.
PCA_DIM = 64


@dataclass(frozen=True)
class _Membership:
    x: np.ndarray  # (U, r) float64: one centred, PCA-projected vector per distinct record
    m: np.ndarray  # (U, R) float64: how often record u is in round r
    n: np.ndarray  # (R,) round sizes
    rows: tuple[np.ndarray, ...]  # per round: the distinct-record index of each of its records


def _membership(snapshots: Sequence[Snapshot], max_dim: int = PCA_DIM) -> _Membership:
    if any(len(s) == 0 for s in snapshots):
        raise AuditorError("a round with no records cannot be compared")
    fp = {s.model.sha256 for s in snapshots}
    if len(fp) > 1:
        raise AuditorError(
            "rounds were embedded with different models "
            f"({', '.join(sorted(f[:12] for f in fp))}); compare rounds of one model"
        )
    uid: dict[str, int] = {}
    first: list[tuple[int, int]] = []
    rows = []
    for r, s in enumerate(snapshots):
        idx = np.empty(len(s), dtype=np.int64)
        for i, h in enumerate(s.batch.hashes):
            u = uid.get(h)
            if u is None:
                u = uid[h] = len(first)
                first.append((r, i))
            idx[i] = u
        rows.append(idx)
    x = np.empty((len(first), snapshots[0].embeddings.shape[1]), dtype=np.float64)
    for u, (r, i) in enumerate(first):
        x[u] = snapshots[r].embeddings[i]
    x -= x.mean(axis=0)
    if x.shape[1] > max_dim:
        evals, evecs = np.linalg.eigh(x.T @ x)
        x = x @ evecs[:, np.argsort(evals)[::-1][:max_dim]]
    m = np.zeros((len(first), len(snapshots)), dtype=np.float64)
    for r, idx in enumerate(rows):
        np.add.at(m[:, r], idx, 1.0)
    n = m.sum(axis=0)
    return _Membership(x=x, m=m, n=n, rows=tuple(rows))


def _group_means(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Weighted means of the rows of x for each column of g: (K, r)."""
    return (g.T @ x) / g.sum(axis=0)[:, None]


def _permuted_group_means(
    x: np.ndarray, g: np.ndarray, n_permutations: int, rng: np.random.Generator
) -> np.ndarray:
    """Group means for B random permutations of the rows of g (equivalently of x):
    (B, K, r)."""
    u, k = g.shape
    r = x.shape[1]
    out = np.empty((n_permutations, k, r), dtype=np.float64)
    # bound the (K, chunk, U) gather to ~16 MB
    chunk = int(max(1, min(128, 2e6 // max(1, u * k))))
    gt = np.ascontiguousarray(g.T)  # (K, U): permuting its columns permutes g's rows
    for start in range(0, n_permutations, chunk):
        b = min(chunk, n_permutations - start)
        perms = np.stack([rng.permutation(u) for _ in range(b)])
        # np.take gives a C-contiguous (K, b, U), so one GEMM serves all b permutations
        flat = np.take(gt, perms, axis=1).reshape(k * b, u) @ x
        out[start : start + b] = flat.reshape(k, b, r).transpose(1, 0, 2)
    out /= g.sum(axis=0)[None, :, None]
    return out


def _sq(v: np.ndarray) -> np.ndarray:
    return np.einsum("...d,...d->...", v, v)


def _projection_sd(mem: _Membership, direction: np.ndarray) -> float:
    """SD of the distinct records' projections on a direction (0 for a zero vector)."""
    norm = float(np.linalg.norm(direction))
    return float(np.std(mem.x @ (direction / norm))) if norm > 0 else 0.0


@dataclass(frozen=True)
class _Contrast:
    """mean(group i) - mean(group j) for round ``t`` against round ``base``.

    kind: "net" (round t vs round base), "added" (t's records not in base vs base),
    "removed" (base's records not in t vs round t).  "removed" compares what was dropped
    with what round t holds, not with what it kept: a round that drops records and adds
    similar ones in their place has not moved, one that drops a topic has.
    """

    t: int
    base: int
    kind: str
    i: int
    j: int


class _Design:
    """Groups (columns of a U x K weight matrix) and the contrasts between them."""

    def __init__(self, mem: _Membership) -> None:
        self.mem = mem
        self.cols: list[np.ndarray] = [mem.m[:, r] for r in range(mem.m.shape[1])]
        self.members: list[np.ndarray] = [np.flatnonzero(c > 0) for c in self.cols]

    def _add(self, w: np.ndarray) -> int:
        self.cols.append(w)
        self.members.append(np.flatnonzero(w > 0))
        return len(self.cols) - 1

    def compare(self, t: int, base: int) -> list[_Contrast]:
        m = self.mem.m
        in_t, in_b = m[:, t], m[:, base]
        out = [_Contrast(t, base, "net", t, base)]
        new = in_t * (in_b == 0)
        if new.any():
            out.append(_Contrast(t, base, "added", self._add(new), base))
        gone = in_b * (in_t == 0)
        if gone.any():
            out.append(_Contrast(t, base, "removed", self._add(gone), t))
        return out

    def matrix(self) -> np.ndarray:
        return np.stack(self.cols, axis=1)


@dataclass(frozen=True)
class _FamilyResult:
    p: float
    statistic: float
    best: _Contrast
    effect: float
    shift: np.ndarray  # mean(i) - mean(j) of the best contrast, in the projected space
    p_raw: dict[tuple[int, str], float]  # (round, kind) -> single-contrast permutation p
    effects: dict[tuple[int, str], float]


def _family(
    mem: _Membership, contrasts: Sequence[_Contrast], obs: np.ndarray, null: np.ndarray
) -> _FamilyResult:
    """Max-standardised test over a family of contrasts.

    Each contrast's |mean_i - mean_j|² is divided by its mean over the observed and all
    permuted values (a symmetric function of the B+1 exchangeable draws, so the max
    statistic's (k+1)/(B+1) p-value stays exact) and the family statistic is the max.
    """
    d_obs = np.array([_sq(obs[c.i] - obs[c.j]) for c in contrasts])
    d_null = np.stack([_sq(null[:, c.i] - null[:, c.j]) for c in contrasts], axis=1)
    scale = np.concatenate([d_obs[None, :], d_null]).mean(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    s_obs = d_obs / scale
    s_null = (d_null / scale).max(axis=1)
    top = float(s_obs.max())
    # With nothing added (or nothing removed) the net contrast is the removed (added) one
    # scaled by a constant, so both standardise to the same value up to rounding; the
    # tie goes to the contrast that names records, not to "net", which names none.
    near = [k for k in range(len(contrasts)) if s_obs[k] >= top * (1 - 1e-9)]
    best = next((k for k in near if contrasts[k].kind != "net"), near[0])
    p = permutation_p_value(top, s_null)
    null_mean = d_null.mean(axis=0)
    effects = {}
    p_raw = {}
    for k, c in enumerate(contrasts):
        sd = _projection_sd(mem, obs[c.i] - obs[c.j])
        # the shift beyond what noise alone gives, in SDs of the records along it
        effects[(c.t, c.kind)] = float(np.sqrt(max(0.0, d_obs[k] - null_mean[k])) / sd) if sd > 0 else 0.0
        p_raw[(c.t, c.kind)] = permutation_p_value(float(d_obs[k]), d_null[:, k])
    c = contrasts[best]
    return _FamilyResult(
        p=p,
        statistic=top,
        best=c,
        effect=effects[(c.t, c.kind)],
        shift=obs[c.i] - obs[c.j],
        p_raw=p_raw,
        effects=effects,
    )


def _pointed_records(
    mem: _Membership, design: _Design, c: _Contrast, shift: np.ndarray, origin: np.ndarray, limit: int
) -> tuple[int, list[int]]:
    """The records a contrast points at: for "removed", the base round's removed records;
    otherwise round t's records not in the base; ranked by how far they lie along the
    shift (most typical of the change first).  Returns (round they belong to, rows)."""
    if c.kind == "removed":
        r, cand_u = c.base, design.members[c.i]
    else:
        r, cand_u = c.t, np.flatnonzero((mem.m[:, c.t] > 0) & (mem.m[:, c.base] == 0))
    if len(cand_u) == 0 or not np.any(shift):
        return r, []
    # shift = mean(changed group) - mean(comparison group) = origin: the pointed records
    # are the changed ones lying furthest along it
    score = (mem.x[cand_u] - origin) @ shift
    order = np.argsort(-score, kind="stable")
    keep = [int(cand_u[i]) for i in order[:limit] if score[i] > 0]
    # distinct record -> its first row in round r
    first_row: dict[int, int] = {}
    for row, u in enumerate(mem.rows[r]):
        first_row.setdefault(int(u), row)
    return r, [first_row[u] for u in keep if u in first_row]


_KIND_TEXT = {
    "net": "moved",
    "added": "added records that differ from",
    "removed": "dropped records that differ from what it holds now, relative to",
}


def round_drift(
    a: Snapshot, b: Snapshot, *, seed: int, n_permutations: int = 999, max_ids: int = 50
) -> Finding:
    """Did round B move away from round A?  Exact under the membership null, whatever
    the overlap.

    Three mean-shift contrasts, max-standardised: B vs A (net), B's added records vs A,
    A's removed records vs B.  effect_size is the winning contrast's shift
    beyond noise, in SDs of the records along it.  record_ids: the added (or removed)
    records furthest along the shift; ``side`` says which round they belong to.
    """
    rng = np.random.default_rng(seed)
    mem = _membership([a, b])
    design = _Design(mem)
    contrasts = design.compare(1, 0)
    g = design.matrix()
    obs = _group_means(mem.x, g)
    null = _permuted_group_means(mem.x, g, n_permutations, rng)
    fam = _family(mem, contrasts, obs, null)
    r, rows = _pointed_records(mem, design, fam.best, fam.shift, obs[fam.best.j], max_ids)
    snap = b if r == 1 else a
    what = {
        "net": "round B moved away from A",
        "added": "B's added records differ from A",
        "removed": "A's removed records differ from round B",
    }[fam.best.kind]
    return Finding(
        check="round_drift",
        summary=f"{what}: shift {fam.effect:.2f} SD beyond noise, p={fam.p:.3g} "
        f"(membership permutation test over 3 contrasts, B={n_permutations})",
        side="current" if r == 1 else "reference",
        record_ids=tuple(snap.ids[i] for i in rows),
        statistic=fam.statistic,
        p_value=fam.p,
        effect_size=fam.effect,
        details={
            "contrast": fam.best.kind,
            "permutations": n_permutations,
            "p_raw": {kind: p for (_, kind), p in fam.p_raw.items()},
            "effect_sd": {kind: e for (_, kind), e in fam.effects.items()},
            "n_distinct_records": int(mem.m.shape[0]),
            "examples": [clip_example(snap.texts[i]) for i in rows[:5]],
        },
    )


# --------------------------------------------------------------------------------------
# trend


def _direction_slope(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round means (..., R, d) -> projections on the cumulative shift root -> last
    (..., R) and their least-squares slope over the round number (...)."""
    cum = mu[..., -1, :] - mu[..., 0, :]
    norm = np.sqrt(_sq(cum))
    unit = cum / np.where(norm > 0, norm, 1.0)[..., None]
    z = np.einsum("...rd,...d->...r", mu - mu[..., :1, :], unit)
    t = np.arange(mu.shape[-2], dtype=np.float64)
    w = (t - t.mean()) / ((t - t.mean()) ** 2).sum()
    return z, z @ w


def trend(
    snapshots: Sequence[Snapshot],
    *,
    seed: int,
    names: Sequence[str] | None = None,
    n_permutations: int = 999,
    max_ids: int = 50,
) -> list[Finding]:
    """Slow drift across a chain of rounds (root first, each the parent of the next).

    Three tests, each one exact permutation p-value under the membership null (rounds'
    memberships kept, embeddings permuted across distinct records):

    - ``trend_root_drift``: every round against the root; per round three mean-shift
      contrasts (round vs root, records added since the root vs the root, root records
      removed since vs the round), max-standardised over rounds and contrasts;
    - ``trend_parent_drift``: the same against each round's parent;
    - ``trend_direction``: do the rounds move steadily one way?  Each round's mean is
      projected on the cumulative shift (root -> last) and the least-squares slope of
      those projections over the round number is the statistic.  (The sum of the steps'
      projections telescopes to the cumulative shift itself, so the slope, which weighs
      where along the chain each round sits, is what adds information.)

    A chain of two rounds gets only the root test (parent = root).  Each p-value tests
    the chain-wide null; the statistic decides which departure from it the test sees.
    """
    if len(snapshots) < 2:
        raise AuditorError(f"trend needs at least 2 rounds in the chain (got {len(snapshots)})")
    names = list(names) if names is not None else [f"round{t}" for t in range(len(snapshots))]
    if len(names) != len(snapshots):
        raise ValueError("names and snapshots differ in length")
    rng = np.random.default_rng(seed)
    mem = _membership(snapshots)
    last = len(snapshots) - 1
    design = _Design(mem)
    root_c = [c for t in range(1, last + 1) for c in design.compare(t, 0)]
    parent_c = [c for t in range(2, last + 1) for c in design.compare(t, t - 1)] if last >= 2 else []
    g = design.matrix()
    obs = _group_means(mem.x, g)
    null = _permuted_group_means(mem.x, g, n_permutations, rng)
    rounds_obs, rounds_null = obs[: last + 1], null[:, : last + 1]
    z, slope = _direction_slope(rounds_obs)
    _, n_slope = _direction_slope(rounds_null)

    root = _family(mem, root_c, obs, null)
    parent = _family(mem, [c for c in root_c if c.t == 1] + parent_c, obs, null) if last >= 2 else None
    per_round = []
    for t in range(1, last + 1):
        row: dict[str, Any] = {
            "round": names[t],
            "n_records": int(mem.n[t]),
            "new_since_root": int(((mem.m[:, t] > 0) & (mem.m[:, 0] == 0)).sum()),
            "new_since_parent": int(((mem.m[:, t] > 0) & (mem.m[:, t - 1] == 0)).sum()),
            "projection_on_cumulative": float(z[t]),
        }
        for fam, label in ((root, "root"), (parent, "parent")):
            if fam is None:
                continue
            for kind in ("net", "added", "removed"):
                if (t, kind) in fam.p_raw:
                    row[f"{label}_{kind}_p_raw"] = fam.p_raw[(t, kind)]
                    row[f"{label}_{kind}_effect_sd"] = fam.effects[(t, kind)]
        per_round.append(row)

    findings: list[Finding] = []
    families = [("trend_root_drift", root)] + ([("trend_parent_drift", parent)] if parent is not None else [])
    for check, fam in families:
        assert fam is not None
        c = fam.best
        r, rows = _pointed_records(mem, design, c, fam.shift, obs[c.j], max_ids)
        snap = snapshots[r]
        against = f"the root {names[0]}" if c.base == 0 else f"its parent {names[c.base]}"
        findings.append(
            Finding(
                check=check,
                summary=(
                    f"round {names[c.t]} {_KIND_TEXT[c.kind]} {against}: {fam.effect:.2f} SD beyond noise, "
                    f"the largest of {len(set(k[0] for k in fam.p_raw))} rounds (p={fam.p:.3g}, "
                    f"max-standardised membership permutation test, B={n_permutations})"
                ),
                side="current" if r == last else "reference",
                record_ids=tuple(snap.ids[i] for i in rows),
                statistic=fam.statistic,
                p_value=fam.p,
                effect_size=fam.effect,
                details={
                    "round": names[c.t],
                    "against": names[c.base],
                    "contrast": c.kind,
                    "records_from_round": names[r],
                    "permutations": n_permutations,
                    "rounds": per_round,
                    "examples": [clip_example(snap.texts[i]) for i in rows[:5]],
                },
            )
        )

    if last >= 2:
        p = permutation_p_value(float(slope), n_slope)
        cum = rounds_obs[last] - rounds_obs[0]
        steps = np.diff(z)
        sd = _projection_sd(mem, cum)
        effect = float(slope - n_slope.mean()) / sd if sd > 0 else 0.0
        c = _Contrast(last, 0, "added", last, 0)
        _, rows = _pointed_records(mem, design, c, cum, rounds_obs[0], max_ids)
        findings.append(
            Finding(
                check="trend_direction",
                summary=(
                    f"{int((steps > 0).sum())} of {last} steps moved along the cumulative shift "
                    f"{names[0]} -> {names[last]}; slope {effect:.3f} SD per round beyond noise (p={p:.3g}, "
                    f"membership permutation test, B={n_permutations})"
                ),
                side="current",
                record_ids=tuple(snapshots[last].ids[i] for i in rows),
                statistic=float(slope),
                p_value=p,
                effect_size=effect,
                details={
                    "round": names[last],
                    "against": names[0],
                    "permutations": n_permutations,
                    "projections": [float(v) for v in z],
                    "steps": [float(v) for v in steps],
                    "n_steps_forward": int((steps > 0).sum()),
                    "null_slope_mean": float(n_slope.mean()),
                    "examples": [clip_example(snapshots[last].texts[i]) for i in rows[:5]],
                },
            )
        )
    return findings
