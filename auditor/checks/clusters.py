"""Cluster enrichment: which regions of embedding space the current batch over- or under-selects.

Method: the label-blind groups and their tests live in :mod:`auditor.enrichment` (how a
cluster is judged over- or under-selected: k-means of the union at several resolutions plus
an agglomerative tree, one-sided Fisher exact tests, Benjamini-Hochberg, merging groups that
name the same records).  This check turns the flagged groups into findings:

1. Significant groups of one direction whose centroids are as close as typical
   neighbouring fine clusters (:func:`group_regions`) are reported as one *region*: its
   ``p_value`` is the smallest adjusted p of its groups, a valid claim that the region
   holds at least one significant group; its counts (``details.n_current_in_cluster``
   etc.) are those of the union, and ``details.region`` lists every group.
2. Which records a finding names: a wide region is not shifted everywhere, so each record's
   10 nearest neighbours in the union locate the shift within it.  An over-selected region
   names its current records whose neighbourhood holds more current records than the
   union's share; an under-selected one names at least the excess reference records
   (reference count minus the current count scaled to the reference size), more when more
   reference records have at most half the union's current share around them, least
   covered first.  This only chooses the records named; it does not change a p-value.
3. Labels: the words that best name the region (:func:`auditor.terms.top_terms`, the
   labeller the HTML report uses too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from auditor import index
from auditor.checks import register
from auditor.enrichment import ClusterTest, cluster_tests, merge_overlapping
from auditor.graph import components
from auditor.stats import share_ratio
from auditor.terms import Background, strip_template, top_terms
from auditor.textutil import excerpt
from auditor.types import Finding, Side, Snapshot

CHECK = "clusters"

EXAMPLES = 4
TERM_SAMPLE = 4000  # records sampled to estimate overall term frequencies for labels


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
    pairs = [
        (i, j)
        for i in range(len(kept))
        for j in range(i + 1, len(kept))
        if kept[i][0].direction == kept[j][0].direction and ksim[i, j] >= threshold
    ]
    labels = components(
        np.array([i for i, _ in pairs], dtype=np.int64), np.array([j for _, j in pairs], dtype=np.int64), len(kept)
    )
    out: dict[int, list[int]] = {}
    for i in range(len(kept)):
        out.setdefault(int(labels[i]), []).append(i)
    return sorted(out.values(), key=lambda r: r[0])


NEIGHBOURS = 10


def _local_current_share(
    union_emb: np.ndarray, rows: np.ndarray, n_ref: int, k: int = NEIGHBOURS
) -> np.ndarray:
    """Share of current records among each union row's ``k`` nearest other union rows."""
    _, nb = index.knn(union_emb, union_emb[rows], k + 1)
    other = nb != rows[:, None]  # drop the record itself (wherever a tie put it)
    n_other = np.maximum(other.sum(axis=1), 1)
    return ((nb >= n_ref) & other).sum(axis=1) / n_other


# The union needs 16 records before any resolution exists (see enrichment.resolutions);
# at m = 8 a side, a cluster holding every current record and no reference one has Fisher
# p = 1/C(16, 8) = 7.8e-5, at most 12 tests make its BH-adjusted p 9.3e-4.
@register(CHECK, min_records=8)
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
    prompts = (
        tuple(ref.batch.prompts) + tuple(cur.batch.prompts)
        if ref.batch.prompts is not None and cur.batch.prompts is not None
        else None
    )
    # labels name content, not the prompt templates the records were wrapped in: read
    # from the records with their template's fixed text removed (label-blind)
    label_texts = strip_template(union_texts, prompts)
    # overall term frequencies for labelling, from a label-blind sample of the union
    background = Background.sample(label_texts, TERM_SAMPLE, np.random.default_rng(seed))
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
        ratio = share_ratio(a, b, n_cur, n_ref)
        terms = top_terms((label_texts[i] for i in members), background, t.resolution)
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
            details["examples"] = [excerpt(cur.texts[i]) for i in ex_rows]
            listed = (
                "all listed"
                if rows.size == a
                else f"listed: {rows.size} of the {a}, the core whose neighbours are mostly current"
            )
            summary = (
                f"{kind} '{label}' over-selected: {a} current records where the reference's "
                f"share predicts {expected:.0f} ({ratio:.1f}x); {listed}"
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
            details["examples"] = [excerpt(ref.texts[i]) for i in rows_out[:EXAMPLES]]
            details["n_uncovered"] = n_uncovered
            details["nearest_current_similarity"] = [round(float(s), 4) for s in cover[order[:n_uncovered]]]
            details["neighbour_current_share"] = [round(float(s), 4) for s in local[order[:n_uncovered]]]
            summary = (
                f"{kind} '{label}' under-selected: {a} current records where the reference's "
                f"share predicts {expected:.0f} ({ratio:.2f}x); listed: the {n_uncovered} of its "
                f"{rows.size} reference records the current batch covers least"
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
