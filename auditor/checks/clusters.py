"""Cluster enrichment: which regions of embedding space the current batch over- or under-selects.

Method (one file to open to change "how a cluster is judged enriched"):

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
4. Reported groups that point at mostly the same records are merged, keeping the most
   significant (the others are listed in ``details.merged_from``).
5. Significant groups of one direction whose centroids are as close as typical
   neighbouring fine clusters (:func:`group_regions`) are reported as one *region*: its
   ``p_value`` is the smallest adjusted p of its groups, a valid claim that the region
   holds at least one significant group; its counts (``details.n_current_in_cluster``
   etc.) are those of the union, and ``details.region`` lists every group.
6. Which records a finding names: a wide region is not shifted everywhere, so each record's
   10 nearest neighbours in the union locate the shift within it.  An over-selected region
   names its current records whose neighbourhood holds more current records than the
   union's share; an under-selected one names at least the excess reference records
   (reference count minus the current count scaled to the reference size), more when more
   reference records have at most half the union's current share around them, least
   covered first.  This only chooses the records named; it does not change a p-value.

:func:`cluster_tests` is shared with the triggers check, which drops phrases an enriched
cluster already explains; the clustering is memoised on the embeddings' content so the two
checks do not pay for k-means twice.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# threadpoolctl comes with scikit-learn (a dependency); it bounds BLAS threads locally
from threadpoolctl import threadpool_limits

from auditor import index
from auditor.checks import register
from auditor.stats import benjamini_hochberg, fisher_exact_greater, fisher_exact_less
from auditor.textutil import excerpt
from auditor.types import Finding, Side, Snapshot

CHECK = "clusters"

# Lowercase word tokens: letters/digits, keeping an inner apostrophe ("don't").
TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

# A small English stopword list for labelling clusters; kept short on purpose so topical
# words ("write", "list") survive.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    also may might must shall s t d ll m o re ve y don't it's i'm can't won't isn't that's
    there's""".split()
)

EXAMPLES = 4
EXAMPLE_CHARS = 200
TOP_TERMS = 8
TERM_SAMPLE = 4000  # records sampled to estimate overall term frequencies for labels


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


def _pca(x: np.ndarray, dim: int) -> np.ndarray:
    """Project centred rows onto the top ``dim`` principal axes (deterministic: eigh)."""
    if dim <= 0 or x.shape[1] <= dim:
        return x
    # A d x d eigenproblem is too small to gain from BLAS threads, and on shared cores
    # spinning OpenBLAS threads made it 20x slower in measurements: run it on one.
    with threadpool_limits(limits=1, user_api="blas"):
        xc = x - x.mean(axis=0, keepdims=True)
        cov = (xc.T @ xc).astype(np.float64)
        _, vecs = np.linalg.eigh(cov)
        return np.ascontiguousarray(xc @ vecs[:, ::-1][:, :dim].astype(np.float32))


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
    xr = _pca(index.normalize(x), pca_dim)
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


def _share_ratio(a: int, b: int, n_cur: int, n_ref: int) -> float:
    # Haldane-Anscombe 0.5 keeps the ratio finite for vanished/new clusters
    return ((a + 0.5) / (n_cur + 0.5)) / ((b + 0.5) / (n_ref + 0.5))


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
            ratio = _share_ratio(a, b, n_cur, n_ref)
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


def group_regions(
    kept: Sequence[tuple[ClusterTest, list]], tests: Sequence[ClusterTest], union_emb: np.ndarray
) -> list[list[int]]:
    """Group reported clusters into regions: single linkage among same-direction clusters
    whose centroids are at least as similar as a typical pair of neighbouring clusters.

    "Typical neighbours" is the median, over the finest resolution's clusters, of each
    cluster's cosine similarity to its nearest other cluster: a scale the data sets,
    label-blind, not a constant tuned to one corpus.  Returns lists of indices into
    ``kept``, each list in ``kept``'s order (most significant first).
    """
    if len(kept) < 2:
        return [[i] for i in range(len(kept))]
    finest = max(t.resolution for t in tests)
    leaves = [
        t.members
        for t in tests
        if t.resolution == finest and t.cluster < finest and t.direction == "enriched"
    ]
    if len(leaves) < 2:
        return [[i] for i in range(len(kept))]

    def centroids(groups: Sequence[np.ndarray]) -> np.ndarray:
        return index.normalize(np.stack([union_emb[g].mean(axis=0) for g in groups]).astype(np.float32))

    lc = centroids(leaves)
    sim = lc @ lc.T
    np.fill_diagonal(sim, -np.inf)
    threshold = float(np.median(sim.max(axis=1)))
    kc = centroids([t.members for t, _ in kept])
    ksim = kc @ kc.T
    parent = list(range(len(kept)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(kept)):
        for j in range(i + 1, len(kept)):
            if kept[i][0].direction == kept[j][0].direction and ksim[i, j] >= threshold:
                parent[find(j)] = find(i)
    out: dict[int, list[int]] = {}
    for i in range(len(kept)):
        out.setdefault(find(i), []).append(i)
    return sorted(out.values(), key=lambda r: r[0])


def enriched_groups(ref: Snapshot, cur: Snapshot, *, seed: int, **params) -> list[np.ndarray]:
    """Current-row indices of each flagged enriched cluster (after merging).

    Takes the same keyword parameters as :func:`cluster_tests`; used by the triggers check
    to leave phrases to this check when a selected cluster explains them.
    """
    tests = [t for t in cluster_tests(ref, cur, seed=seed, **params) if t.flagged]
    n_ref = len(ref)
    out = []
    for t, _ in merge_overlapping([t for t in tests if t.direction == "enriched"]):
        m = t.members[t.members >= n_ref] - n_ref
        out.append(np.sort(m))
    return out


NEIGHBOURS = 10


def _local_current_share(
    union_emb: np.ndarray, rows: np.ndarray, n_ref: int, k: int = NEIGHBOURS
) -> np.ndarray:
    """Share of current records among each union row's ``k`` nearest other union rows."""
    _, nb = index.knn(union_emb, union_emb[rows], k + 1)
    other = nb != rows[:, None]  # drop the record itself (wherever a tie put it)
    n_other = np.maximum(other.sum(axis=1), 1)
    return ((nb >= n_ref) & other).sum(axis=1) / n_other


def _tokens(text: str) -> list[str]:
    return [w for w in TOKEN_RE.findall(text.lower()) if w not in STOPWORDS and not w.isdigit()]


def _top_terms(
    member_texts: Sequence[str], all_counts: Counter, total_words: int, n_groups: int, scale: float
) -> list[str]:
    """c-TF-IDF (Grootendorst 2022, BERTopic): a cluster's term frequency times
    log(1 + A / f_t), A = average words per cluster, f_t = the term's frequency overall.

    ``all_counts``/``total_words`` may come from a sample of the union (``scale`` = sampled
    share): A / f_t is a ratio of two totals and does not change with the sampling rate.
    """
    counts: Counter = Counter()
    for t in member_texts:
        counts.update(_tokens(t))
    words = sum(counts.values())
    if words == 0:
        return []
    avg = total_words / max(1, n_groups)
    scored = [
        # a term the sample missed is rare overall: its cluster count bounds f_t
        (c / words * math.log(1.0 + avg / max(all_counts.get(w, 0), c * scale)), w)
        for w, c in counts.items()
        if c >= 2
    ]
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [w for _, w in scored[:TOP_TERMS]]


def _truncate(text: str, n: int = EXAMPLE_CHARS) -> str:
    return excerpt(text, n)


@register(CHECK)
def cluster_enrichment(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    alpha: float = 0.05,
    min_ratio: float = 1.5,
    min_records: int = 5,
    pca_dim: int = 64,
    niter: int = 20,
    merge_overlap: float = 0.6,
    ks: Sequence[int] | None = None,
    hierarchy: bool = True,
    regions: bool = True,
) -> list[Finding]:
    """Regions of embedding space the current batch over- or under-selects vs the reference.

    Label-blind k-means of the union at several resolutions; one-sided Fisher exact test per
    cluster and direction; Benjamini-Hochberg across all of them (``p_value`` is adjusted,
    ``details.p_raw`` raw).  A cluster is reported when adjusted p <= ``alpha``, its share
    ratio is >= ``min_ratio`` and at least ``min_records`` records carry the shift.
    Over-selected clusters point at their current members; under-selected ones at the
    reference members the current batch no longer covers (least covered first).  ``ks``
    overrides the cluster counts (default: :func:`resolutions` of the union's size);
    ``hierarchy`` adds the nodes of a tree over the finest clusters, ``regions`` reports
    neighbouring significant clusters as one region (see the module docstring).
    """
    tests = cluster_tests(
        ref,
        cur,
        seed=seed,
        alpha=alpha,
        min_ratio=min_ratio,
        min_records=min_records,
        pca_dim=pca_dim,
        niter=niter,
        ks=ks,
        hierarchy=hierarchy,
    )
    flagged = [t for t in tests if t.flagged]
    if not flagged:
        return []
    n_ref, n_cur = len(ref), len(cur)
    n_tests = len(tests)
    ks = sorted({t.resolution for t in tests})
    union_texts = tuple(ref.texts) + tuple(cur.texts)
    # overall term frequencies for labelling, from a label-blind sample of the union
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(union_texts), size=min(len(union_texts), TERM_SAMPLE), replace=False)
    all_counts: Counter = Counter()
    for i in sample:
        all_counts.update(_tokens(union_texts[i]))
    total_words = sum(all_counts.values())
    scale = sample.size / max(1, len(union_texts))
    union_emb = np.concatenate([np.asarray(ref.embeddings), np.asarray(cur.embeddings)], axis=0)

    findings = []
    side: Side
    kept = merge_overlapping(flagged, overlap=merge_overlap)
    for region in group_regions(kept, tests, union_emb) if regions else [[i] for i in range(len(kept))]:
        # the region's most significant cluster names it and gives its p-value
        t, merged = kept[region[0]]
        parts = [kept[i][0] for i in region]
        members = np.unique(np.concatenate([p.members for p in parts])) if len(parts) > 1 else t.members
        a = int(np.count_nonzero(members >= n_ref))
        b = int(members.size - a)
        ratio = _share_ratio(a, b, n_cur, n_ref)
        terms = _top_terms([union_texts[i] for i in members], all_counts, total_words, t.resolution, scale)
        label = ", ".join(terms[:3]) or f"#{t.cluster}"
        kind = "cluster" if len(parts) == 1 else f"region of {len(parts)} clusters"
        centroid = index.normalize(union_emb[members].mean(axis=0, keepdims=True))[0]
        expected = b * n_cur / n_ref  # current count if current kept the reference share
        details = {
            "resolution_k": t.resolution,
            "cluster": t.cluster,
            "merged_from": merged,
            # every significant cluster of the region: [k, cluster, n_current, n_reference, p_adj]
            "region": [[p.resolution, p.cluster, p.n_cur, p.n_ref, p.p_adj] for p in parts],
            "direction": t.direction,
            "n_current_in_cluster": a,
            "n_reference_in_cluster": b,
            "expected_current_from_reference_share": round(expected, 2),
            "expected_current_under_null": round((a + b) * n_cur / (n_ref + n_cur), 2),
            "share_current": a / n_cur,
            "share_reference": b / n_ref,
            "share_ratio": ratio,
            "p_raw": t.p_raw,
            "n_tests": n_tests,
            "resolutions": ks,
            "method": "one-sided Fisher exact per cluster and direction on label-blind k-means "
            "of the union (several resolutions plus an agglomerative tree over the finest "
            "clusters); Benjamini-Hochberg across all; neighbouring significant clusters are "
            "reported as one region with the smallest adjusted p of its clusters",
            "top_terms": terms,
        }
        if t.direction == "enriched":
            rows = members[members >= n_ref]
            # A wide region is not over-selected everywhere: name the current records whose
            # own neighbourhood over-represents current (share above the union's), which
            # drops most of the region's unchanged fringe and keeps its selected core.
            local = _local_current_share(union_emb, rows, n_ref)
            core = local > n_cur / (n_ref + n_cur)
            rows = (rows[core] if core.any() else rows) - n_ref
            # examples nearest the cluster centre are the most typical of it
            sims = np.asarray(cur.embeddings)[rows] @ centroid if rows.size else np.zeros(0)
            ex_rows = rows[np.argsort(-sims, kind="stable")[:EXAMPLES]]
            record_ids = tuple(cur.ids[i] for i in rows)
            details["examples"] = [_truncate(cur.texts[i]) for i in ex_rows]
            summary = (
                f"{kind} '{label}' over-selected: {a} current vs {expected:.0f} expected "
                f"from the reference share ({ratio:.1f}x)"
            )
            side = "current"
        else:
            rows = members[members < n_ref]
            # The region's current members stand in for a * n_ref / n_cur reference
            # records; the excess beyond that, least covered by current records first, is
            # what the current batch dropped.
            if n_cur and rows.size:
                cover, _ = index.knn(np.asarray(cur.embeddings), np.asarray(ref.embeddings)[rows], 1)
                cover = cover[:, 0]
                local = _local_current_share(union_emb, rows, n_ref)
            else:
                cover = np.zeros(rows.size, dtype=np.float32)
                local = np.zeros(rows.size)
            # A wide cluster's reference records are not all equally missed: those whose
            # own neighbourhood holds the fewest current records come first, then those
            # farthest from any current record.
            order = np.lexsort((cover, local))
            # at least the excess; more where more reference records sit in neighbourhoods
            # that under-represent current (share below the union's)
            n_excess = round(b - a * n_ref / n_cur)
            n_low = int(np.count_nonzero(local <= 0.5 * n_cur / (n_ref + n_cur)))
            n_uncovered = int(min(rows.size, max(1, n_excess, n_low)))
            rows_out = rows[order[:n_uncovered]]
            record_ids = tuple(ref.ids[i] for i in rows_out)
            details["examples"] = [_truncate(ref.texts[i]) for i in rows_out[:EXAMPLES]]
            details["n_uncovered"] = n_uncovered
            details["nearest_current_similarity"] = [round(float(s), 4) for s in cover[order[:n_uncovered]]]
            details["neighbour_current_share"] = [round(float(s), 4) for s in local[order[:n_uncovered]]]
            summary = (
                f"{kind} '{label}' under-selected: {a} current vs {expected:.0f} expected "
                f"from the reference share ({ratio:.2f}x)"
            )
            side = "reference"
        findings.append(
            Finding(
                check=CHECK,
                summary=summary,
                side=side,
                record_ids=record_ids,
                statistic=float(a),
                p_value=t.p_adj,
                effect_size=float(math.log2(ratio)),
                details=details,
            )
        )
    findings.sort(key=lambda f: (f.p_value, -abs(f.effect_size or 0.0)))
    return findings
