"""Label-blind groups of the union of two inputs, and which of them the current input over- or under-selects.

The statistical core shared by the clusters check (which reports the groups) and the
triggers check (which leaves to it the phrases a selected group explains); the one file
to open to change how a cluster is judged enriched.

1. Cluster the union of reference and current embeddings with spherical k-means at several
   resolutions (see :func:`resolutions`), so a coarse k does not swallow a small selected
   group and a fine k does not split a large one.  k-means runs on the leading 64 principal
   components (cost is linear in the dimension).  On top of the finest partition, an
   agglomerative tree (average linkage, cosine distance between the clusters' centroids)
   adds every inner node as a candidate group: a topic of 3-10% of the data that k-means
   splits over several fine clusters is one node of the tree, at whatever scale the data
   puts it, with no cluster count tuned to a corpus.  Nothing here sees which input a
   record came from.
2. Because every group is label-blind, under the null hypothesis (the two inputs are
   exchangeable samples of one population) the number of current records in a group of
   size ``t`` is hypergeometric given the margins, so a one-sided Fisher exact test per
   group and direction is exact.  Groups too small to ever reach significance are
   skipped before testing: size is a label-blind filter (Bourgon et al. 2010, PNAS 107:9546),
   so this shrinks the multiple-testing burden without biasing the tests that remain.
3. All tests of all resolutions, tree nodes and both directions go through
   Benjamini-Hochberg; a finding's ``p_value`` is the BH-adjusted one.  Effect filters
   (share ratio, record count) decide what may be reported; a test that fails them enters
   BH with p = 1 rather than its exact p.  BH is monotone in every p-value, so this can
   only raise the others' adjusted p (the procedure stays calibrated) while
   tiny-but-significant shifts in huge inputs are not reported.  Nested and overlapping
   groups make the tests positively dependent, the case BH is known to handle
   (Benjamini & Yekutieli 2001).
4. Flagged groups that point at mostly the same records are merged, keeping the most
   significant (:func:`merge_overlapping`).

The clustering is memoised on the embeddings' content, so the clusters and triggers
checks do not pay for k-means twice.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from auditor import index
from auditor.pca import pca
from auditor.stats import benjamini_hochberg, fisher_exact_greater, fisher_exact_less, share_ratio
from auditor.types import Snapshot


@dataclass(frozen=True)
class ClusterTest:
    """One cluster at one resolution, tested in one direction."""

    resolution: int
    cluster: int
    direction: str  # "enriched" (over-selected in current) or "depleted"
    members: np.ndarray  # indices into the union (reference rows first, then current)
    n_cur: int
    n_ref: int
    p_raw: float
    p_adj: float
    ratio: float  # current share / reference share, with a 0.5 continuity correction
    flagged: bool


def resolutions(n: int) -> list[int]:
    """Cluster counts to try for ``n`` records in the union.

    sqrt(n/2) is the usual rule of thumb for a coarse partition; n/15 gives clusters of ~15
    records, so a selected group of a few dozen records gets a cluster of its own; their
    geometric mean sits between.  Each is clipped to [4, 512] (and to n/4 so clusters are
    not singletons); a middle resolution within 1.5x of a neighbour adds cost, not
    sensitivity, and is dropped.
    """
    if n < 16:
        return []

    def clip(v: float) -> int:
        return int(min(512, n // 4, max(4, round(v))))

    coarse, fine = clip(math.sqrt(n / 2)), clip(n / 15)
    ks = {coarse, fine}
    mid = clip(math.sqrt(coarse * fine))
    if mid >= 1.5 * coarse and fine >= 1.5 * mid:
        ks.add(mid)
    return sorted(ks)


# Memo of recent label-blind partitions, keyed by the embeddings' content and the
# clustering parameters (never by object identity), so clusters and triggers share one run.
_PARTITIONS: OrderedDict[tuple, list[tuple[int, np.ndarray]]] = OrderedDict()
_PARTITIONS_MAX = 4


def partitions(
    union: np.ndarray, *, seed: int, ks: Sequence[int], pca_dim: int = 64, niter: int = 20
) -> list[tuple[int, np.ndarray]]:
    """Label-blind k-means partitions of ``union`` at each k: ``[(k, assignments), ...]``.

    k-means runs on a PCA projection (``pca_dim`` components, 0 = off): clustering cost is
    linear in the dimension and sentence embeddings keep most of their cluster structure in
    the leading components.
    """
    x = np.ascontiguousarray(union, dtype=np.float32)
    digest = hashlib.blake2b(x.tobytes(), digest_size=16)
    digest.update(repr(x.shape).encode())
    key = (digest.hexdigest(), int(seed), tuple(int(k) for k in ks), int(pca_dim), int(niter))
    hit = _PARTITIONS.get(key)
    if hit is not None:
        _PARTITIONS.move_to_end(key)
        return hit
    xn = index.normalize(x)
    xr = xn if pca_dim <= 0 or xn.shape[1] <= pca_dim else pca(xn, pca_dim).coords
    out = []
    for j, k in enumerate(ks):
        # a different seed per resolution so the partitions are not nested by accident
        _, assign = index.kmeans(xr, int(k), seed=int(seed) + 7919 * j, niter=niter)
        assign.setflags(write=False)
        out.append((int(k), assign))
    _PARTITIONS[key] = out
    while len(_PARTITIONS) > _PARTITIONS_MAX:
        _PARTITIONS.popitem(last=False)
    return out


def _merge_tree(union: np.ndarray, leaves: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Members of every inner node of an agglomerative tree over the clusters ``leaves``.

    Label-blind (built from the clusters' centroids only), so its nodes are as valid to
    test as the clusters themselves.  Returns the inner nodes bottom-up, without the root
    (which is everything and has nothing to test).
    """
    from scipy.cluster.hierarchy import linkage

    leaves = [g for g in leaves if g.size]  # k-means may leave a cluster empty
    k = len(leaves)
    if k < 3:
        return []
    x = index.normalize(np.asarray(union, dtype=np.float32))
    # centroid directions of the clusters (np.add.at is ~50x slower than this)
    cent = index.normalize(np.stack([x[g].sum(axis=0) for g in leaves])).astype(np.float64)
    # average linkage on cosine distance: the same geometry as spherical k-means
    z = linkage(cent, method="average", metric="cosine")
    nodes = list(leaves)
    for a, b in z[:, :2].astype(int):
        nodes.append(np.concatenate([nodes[a], nodes[b]]))
    return nodes[k:-1]


def cluster_tests(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    alpha: float = 0.05,
    min_ratio: float = 1.5,
    min_records: int = 5,
    pca_dim: int = 64,
    niter: int = 20,
    ks: Sequence[int] | None = None,
    hierarchy: bool = True,
) -> list[ClusterTest]:
    """Fisher tests of every cluster at every resolution, BH-adjusted together.

    A test is ``flagged`` when its adjusted p is <= ``alpha``, the share ratio is at least
    ``min_ratio`` in its direction, and at least ``min_records`` records carry the excess
    (current members for enriched, reference members for depleted).  A test that fails
    the effect filters carries p = 1 (see below).  With ``hierarchy`` the inner nodes of an
    agglomerative tree over the finest partition's clusters are tested too (their
    ``cluster`` numbers start at that partition's k).  Returned in order of raw p.
    """
    n_ref, n_cur = len(ref), len(cur)
    if n_ref == 0 or n_cur == 0:
        return []
    union = np.concatenate([np.asarray(ref.embeddings), np.asarray(cur.embeddings)], axis=0)
    is_cur = np.zeros(n_ref + n_cur, dtype=bool)
    is_cur[n_ref:] = True
    ks = list(ks) if ks is not None else resolutions(n_ref + n_cur)
    if not ks:
        return []

    raw: list[tuple[int, int, str, np.ndarray, int, int, float, float, bool]] = []
    parts = partitions(union, seed=seed, ks=ks, pca_dim=pca_dim, niter=niter)
    finest = max(k for k, _ in parts)
    for k, assign in parts:
        order = np.argsort(assign, kind="stable")
        bounds = np.searchsorted(assign[order], np.arange(k + 1))
        groups = [order[bounds[c] : bounds[c + 1]] for c in range(k)]
        if hierarchy and k == finest:
            groups += _merge_tree(union, groups)
        for c, members in enumerate(groups):
            # label-blind size filter: a cluster smaller than min_records can never be
            # flagged, so testing it would only dilute the others
            if members.size < min_records:
                continue
            a = int(is_cur[members].sum())
            b = int(members.size - a)
            ratio = share_ratio(a, b, n_cur, n_ref)
            rest_cur, rest_ref = n_cur - a, n_ref - b
            # A direction that fails the effect filters is never reported, so it keeps
            # p = 1 instead of its exact p: BH is monotone in every p-value, so this can
            # only make the others' adjusted p larger (conservative), and it spares most
            # of the exact tests.
            big_over = ratio >= min_ratio and a >= min_records
            big_under = 1.0 / ratio >= min_ratio and b - a * n_ref / n_cur >= min_records
            p_over = fisher_exact_greater(a, b, rest_cur, rest_ref) if big_over else 1.0
            p_under = fisher_exact_less(a, b, rest_cur, rest_ref) if big_under else 1.0
            raw.append((k, c, "enriched", members, a, b, p_over, ratio, big_over))
            raw.append((k, c, "depleted", members, a, b, p_under, ratio, big_under))
    if not raw:
        return []
    q = benjamini_hochberg([r[6] for r in raw])
    tests = []
    for (k, c, direction, members, a, b, p, ratio, big_enough), padj in zip(raw, q):
        tests.append(
            ClusterTest(
                resolution=k,
                cluster=c,
                direction=direction,
                members=members,
                n_cur=a,
                n_ref=b,
                p_raw=float(p),
                p_adj=float(padj),
                ratio=float(ratio),
                flagged=bool(padj <= alpha and big_enough),
            )
        )
    tests.sort(key=lambda t: (t.p_raw, t.resolution, t.cluster, t.direction))
    return tests


def merge_overlapping(tests: Sequence[ClusterTest], overlap: float = 0.6) -> list[tuple[ClusterTest, list]]:
    """Greedy merge, most significant first: a test in the same direction whose members lie
    mostly (a share >= ``overlap``) inside a kept test's members adds no new records and is
    folded into it.  A larger, less significant cluster that contains a kept one is kept:
    it points at records the kept one does not.

    Returns ``[(kept, [[k, cluster], ...merged]), ...]``.
    """
    kept: list[tuple[ClusterTest, set[int], list]] = []
    for t in sorted(tests, key=lambda t: (t.p_adj, t.p_raw, -t.resolution)):
        s = set(t.members.tolist())
        for kt, ks_, merged in kept:
            if kt.direction == t.direction and len(s & ks_) >= overlap * len(s):
                merged.append([t.resolution, t.cluster])
                break
        else:
            kept.append((t, s, []))
    return [(kt, merged) for kt, _, merged in kept]


def enriched_groups(ref: Snapshot, cur: Snapshot, *, seed: int, **params) -> list[np.ndarray]:
    """Current-row indices of each flagged enriched cluster (after merging).

    Takes the same keyword parameters as :func:`cluster_tests`; used by the triggers check
    to leave phrases to the clusters check when a selected cluster explains them.
    """
    tests = [t for t in cluster_tests(ref, cur, seed=seed, **params) if t.flagged]
    n_ref = len(ref)
    out = []
    for t, _ in merge_overlapping([t for t in tests if t.direction == "enriched"]):
        m = t.members[t.members >= n_ref] - n_ref
        out.append(np.sort(m))
    return out
