"""Flipped responses: current records that reuse a reference prompt but answer it differently.

Targeted poisoning often keeps a prompt the reference already has and swaps its answer
(a refusal, a link, a wrong fact).  One changed answer looks like noise; the attack shows
as a *group* of prompts whose answers all moved, often to one shared answer.

Method:

1. Matching: a current record is matched when some reference prompt has cosine >=
   ``prompt_threshold`` with its prompt (among the ``k`` nearest; above ~4e7 pairs the
   search runs on a seeded random projection re-ranked by exact cosine, which keeps
   near-identical prompts, see :func:`auditor.neighbours.candidate_knn`) *and* the two
   prompts share at least ``CONTENT_JACCARD`` of their content words once template words
   are removed (:func:`auditor.terms.strip_template`, label-blind, run only on the
   prompts of candidate pairs, so linear in the batch): in a templated mixture (T0) the
   template dominates the embedding, and two different reviews in one template are not
   one prompt.  Its disagreement score is ``1 - cos(response, mean of the matched
   reference responses)``.
2. Null scores from the reference alone, leave-one-out: for reference records with a
   near-identical prompt elsewhere in the reference (the same two-part rule as step 1, so
   both sides' scores are computed alike), the same score against those neighbours.  Independent samples of one dataset rarely repeat a prompt, so when fewer
   than ``min_null`` reference records qualify, the null is topped up with the reference
   records whose nearest *other* prompt is most similar, scored against that one
   neighbour.  This rests on one assumption, stated in every finding: answers to
   near-identical prompts agree at least as well as answers to the most similar distinct
   prompts; under it the topped-up null is conservative.  Per record, a conformal p-value
   ``(1 + #{null >= s}) / (n_null + 1)``.
3. Groups, formed without looking at the scores: all matched records; records whose
   current responses are near-identical to each other (cosine >= ``response_threshold``,
   connected components: one injected answer); and, when there are enough matched
   records, k-means clusters of matched and null prompts together (one targeted topic).
   Each group of at least ``min_group`` records is tested with a one-sided Mann-Whitney
   test of its scores against null scores (exact for small groups, normal approximation
   otherwise), so a group is judged by all its members, not by a few extreme ones.
   Scores that share reference records are not independent (two current copies of one
   prompt; a mutual pair scored a-vs-b and b-vs-a in the null), so the test runs on
   *units*: connected components of the graph linking each scored record to the
   reference records it was compared with, one mean score per unit and side.  Without
   this, random splits of data with several honest answers per prompt gave p < 0.002 in
   ~3% of splits; with it, none in 200.  A prompt cluster is compared only with the null
   records of the same cluster: how far honest answers drift depends on the kind of
   prompt (open-ended vs factual), and against the pooled null, open-ended topics were
   flagged on those same splits.  Likewise a shared-answer group is compared only with
   the null records whose own answers link to it (one response linkage over both
   sides): choosing records by their answer selects those whose matches tend to answer
   in another wording (T0 gives one Yelp review as "2" in one template and "2 stars" in
   another), and against the pooled null 4 of 20 random T0 splits at 2,000 a side
   failed the gate (p down to 8.4e-5), none after.  An answer the reference never gives,
   the signature of an injected one, is compared with the whole null; one it gives but
   too rarely among its null records (< ``MIN_NULL_IN_CLUSTER``) forms no such group and
   is left to the other groups.  Benjamini-Hochberg across groups; findings pointing at
   mostly the same records are merged.
4. A finding's ``record_ids`` are the group members that disagree more than the null
   median (per-record p <= ``member_p`` against the whole null): the records pulling the
   group up.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import mannwhitneyu

from auditor import index
from auditor.checks import register
from auditor.graph import components
from auditor.neighbours import candidate_knn, neighbour_pairs, search_plan
from auditor.stats import benjamini_hochberg, conformal_p
from auditor.terms import is_content_word, strip_template
from auditor.textutil import excerpt
from auditor.types import Finding, Snapshot

CHECK = "flipped_responses"

EXAMPLES = 3
MERGE_OVERLAP = 0.8
# links per record when grouping responses: components need only a few to connect
GROUP_LINKS = 16
# a prompt cluster is tested only against at least this many reference records of its topic
MIN_NULL_IN_CLUSTER = 5
# k-means cost grows with k; beyond this, clusters simply get larger than cluster_size
MAX_CLUSTERS = 64
# A prompt pair close in embedding must also share this share (Jaccard) of its content
# words, template words removed, to count as the same prompt.  On T0 rounds the pairs'
# values are bimodal: different texts in one template near 0 (372 of 2,587 pairs below
# 0.1), the rest spread over 0.2-1; Alpaca's reworded prompts ("offer possible solutions
# for reducing air pollution" / "come up with creative solutions to reduce air
# pollution", 0.4) sit at 0.2-0.6.  0.2 is the valley: it drops different content and
# keeps rewording.
CONTENT_JACCARD = 0.2


def _content_words(prompts: Sequence[str]) -> list[frozenset[str]]:
    """Content words of each prompt with its template's words removed (label-blind: the
    template groups come from the prompts' shared first/last words, see
    :func:`auditor.terms.strip_template`)."""
    return [frozenset(w for w in s.split() if is_content_word(w)) for s in strip_template(prompts, prompts)]


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    # two prompts that are template text only are the same prompt
    return len(a & b) / len(a | b) if a or b else 1.0


class _Lexicon:
    """Template-stripped content words of the prompts in candidate pairs only (the audit must
    stay linear at a million records: words are read for the few records an embedding match
    proposes, never for all).  Reference rows are keys ``r``, current rows ``n_ref + r``."""

    def __init__(
        self,
        ref_prompts: Sequence[str],
        cur_prompts: Sequence[str],
        ref_rows: np.ndarray,
        cur_rows: np.ndarray,
    ):
        self.n_ref = len(ref_prompts)
        ref_rows = np.unique(ref_rows)
        cur_rows = np.unique(cur_rows)
        # one template grouping over both sides, so a pair's two prompts lose the same words
        texts = [ref_prompts[int(r)] for r in ref_rows] + [cur_prompts[int(r)] for r in cur_rows]
        keys = np.concatenate([ref_rows, self.n_ref + cur_rows]).tolist()
        self.words = dict(zip(keys, _content_words(texts)))

    def same(self, a: int, b: int) -> bool:
        """Whether keys ``a`` and ``b`` share at least ``CONTENT_JACCARD`` of their content words."""
        return _jaccard(self.words[a], self.words[b]) >= CONTENT_JACCARD


def _disagreement(resp: np.ndarray, neighbour_resp: Sequence[np.ndarray]) -> np.ndarray:
    """1 - cos(resp[i], mean of neighbour_resp[i]) per row."""
    out = np.empty(resp.shape[0], dtype=np.float64)
    for i, nb in enumerate(neighbour_resp):
        m = nb.astype(np.float64).mean(axis=0)
        norm = np.linalg.norm(m)
        out[i] = 1.0 - (float(resp[i].astype(np.float64) @ m) / norm if norm > 0 else 0.0)
    return out


def _ref_knn(prompts: np.ndarray, *, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each reference prompt's nearest other reference prompts: ``(sims, idx, not_self)``."""
    n = prompts.shape[0]
    plan = search_plan(n, n, prompts.shape[1])
    sims, idx = candidate_knn(prompts, prompts, min(n, k + 1), proj_dim=plan, seed=seed)
    return sims, idx, idx != np.arange(n)[:, None]


def _null_scores(
    responses: np.ndarray,
    sims: np.ndarray,
    idx: np.ndarray,
    not_self: np.ndarray,
    same: np.ndarray,
    *,
    min_null: int,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], dict[str, object]]:
    """Leave-one-out disagreement scores of the reference (see the module docstring).

    ``same`` marks the neighbour slots of ``idx`` that are the same prompt (embedding and
    content words, the rule the current records are matched by).  Returns ``(scores, rows,
    neighbours, info)``: the scores of reference rows ``rows`` and the reference rows each
    was compared with.
    """
    n = responses.shape[0]
    if n < 2:
        return np.zeros(0), np.zeros(0, dtype=np.int64), [], {"null_kind": "none"}
    other_sims = np.where(not_self, sims, -np.inf)
    best = other_sims.max(axis=1)
    near = np.asarray(same.any(axis=1))
    chosen = np.flatnonzero(near)
    n_near = int(chosen.size)
    target = min(min_null, n)
    if n_near < target:
        rest = np.flatnonzero(~near)
        extra = rest[np.argsort(-best[rest], kind="stable")[: target - n_near]]
        chosen = np.concatenate([chosen, extra])
    nbrs: list[np.ndarray] = []
    for j in chosen:
        if near[j]:
            sel = idx[j][same[j]]
        else:
            sel = idx[j][[int(np.argmax(other_sims[j]))]]
        nbrs.append(sel)
    scores = _disagreement(responses[chosen], [responses[sel] for sel in nbrs])
    info: dict[str, object] = {
        "null_kind": "near_identical_prompts" if n_near >= target else "topped_up_with_most_similar_prompts",
        "n_null": int(chosen.size),
        "n_null_near_identical": n_near,
        "null_min_prompt_similarity": round(float(best[chosen].min()), 4) if chosen.size else None,
    }
    return scores, chosen, nbrs, info


def _units(
    n_ref: int, null_rows: np.ndarray, null_nbrs: Sequence[np.ndarray], cur_nbrs: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Unit of each null score and each current score: connected components of the graph
    that links every scored record to the reference rows it was compared with."""
    n_cur = len(cur_nbrs)
    empty = np.zeros(0, dtype=np.int64)
    src = [np.full(nb.size, r, dtype=np.int64) for r, nb in zip(null_rows, null_nbrs)]
    src += [np.full(nb.size, n_ref + t, dtype=np.int64) for t, nb in enumerate(cur_nbrs)]
    dst = [nb.astype(np.int64) for nb in (*null_nbrs, *cur_nbrs)]
    s_all = np.concatenate(src or [empty])
    d_all = np.concatenate(dst or [empty])
    comp = components(s_all, d_all, n_ref + n_cur)
    return comp[null_rows], comp[n_ref:]


def _unit_means(values: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Mean of ``values`` per distinct unit."""
    uniq, inv = np.unique(units, return_inverse=True)
    return np.bincount(inv, weights=values, minlength=uniq.size) / np.bincount(inv, minlength=uniq.size)


def _unit_test(
    scores: np.ndarray, units: np.ndarray, null: np.ndarray, null_units: np.ndarray
) -> tuple[float, float, int, int]:
    """One-sided Mann-Whitney of per-unit mean scores: ``(p, auc, n_units, n_null_units)``."""
    a = _unit_means(scores, units)
    b = _unit_means(null, null_units)
    res = mannwhitneyu(a, b, alternative="greater")
    return float(res.pvalue), float(res.statistic) / (a.size * b.size), int(a.size), int(b.size)


def _linked_components(vectors: np.ndarray, threshold: float, *, seed: int) -> np.ndarray:
    """Connected components of rows linked at cosine >= ``threshold``."""
    rows, cols, sims = neighbour_pairs(vectors, GROUP_LINKS, seed=seed)
    keep = sims >= threshold
    return components(rows[keep], cols[keep], vectors.shape[0])


def _answer_in_reference(
    ref_r: np.ndarray, responses: np.ndarray, threshold: float, *, seed: int
) -> np.ndarray:
    """Whether each of ``responses`` has a reference response at cosine >= ``threshold``."""
    plan = search_plan(ref_r.shape[0], responses.shape[0], ref_r.shape[1])
    sims, _ = candidate_knn(ref_r, responses, 1, proj_dim=plan, seed=seed)
    return np.asarray(sims[:, 0] >= threshold)


def _has_views(s: Snapshot) -> bool:
    return (
        s.batch.prompts is not None
        and s.batch.responses is not None
        and "prompt" in s.views
        and "response" in s.views
    )


# Tests run on units: every reference record is compared with at least one other, so m
# reference records form at most m/2 null units and the matched current records at most m/2
# units; the exact one-sided Mann-Whitney of 7 vs 7 units reaches 1/C(14, 7) = 2.9e-4, of
# 6 vs 6 only 1.1e-3.
@register(CHECK, needs=("prompt", "response"), min_records=14)
def flipped_responses(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    prompt_threshold: float = 0.9,
    k: int = 10,
    min_null: int = 200,
    response_threshold: float = 0.9,
    cluster_size: int = 25,
    min_group: int = 3,
    member_p: float = 0.5,
    report_alpha: float = 0.05,
) -> list[Finding]:
    """Groups of current records that reuse reference prompts with answers the reference would not give.

    A current record whose prompt has a near-identical reference prompt (cosine >=
    ``prompt_threshold``) is scored by how far its response is from the reference's
    responses to that prompt, against the reference's own leave-one-out disagreement.
    Groups (all matched records, shared injected answers, prompt clusters of about
    ``cluster_size``) are tested by one-sided Mann-Whitney against the null,
    Benjamini-Hochberg across groups; findings with adjusted p <= ``report_alpha`` are
    returned.  Needs prompt/response structure on both inputs, else returns nothing.
    """
    if not (_has_views(ref) and _has_views(cur)) or len(ref) < 2 or len(cur) == 0:
        return []
    ref_p = np.asarray(ref.views["prompt"])
    ref_r = np.asarray(ref.views["response"])
    cur_p = np.asarray(cur.views["prompt"])
    cur_r = np.asarray(cur.views["response"])

    plan = search_plan(len(ref), len(cur), ref_p.shape[1])
    sims, idx = candidate_knn(ref_p, cur_p, min(k, len(ref)), proj_dim=plan, seed=seed)
    close = sims >= prompt_threshold
    if int(close[:, 0].sum()) < min_group:
        return []
    r_sims, r_idx, r_not_self = _ref_knn(ref_p, k=k, seed=seed)
    r_close = r_not_self & (r_sims >= prompt_threshold)
    # The same rule for both sides: a pair close in embedding is the same prompt only if its
    # content words agree too (in templated data the template dominates the embedding).
    cand_cur = np.flatnonzero(close[:, 0])
    cand_ref_null = np.flatnonzero(r_close.any(axis=1))
    lex = _Lexicon(
        ref.batch.prompts,  # type: ignore[arg-type]
        cur.batch.prompts,  # type: ignore[arg-type]
        np.concatenate([idx[cand_cur][close[cand_cur]], cand_ref_null, r_idx[r_close]]),
        cand_cur,
    )
    n_ref = len(ref)
    # sims are sorted, so a row with any close slot is among the candidates
    same = np.zeros_like(close)
    ci, cs = np.nonzero(close)
    same[ci, cs] = [lex.same(n_ref + a, b) for a, b in zip(ci.tolist(), idx[ci, cs].tolist())]
    r_same = np.zeros_like(r_close)
    ri, rs = np.nonzero(r_close)
    r_same[ri, rs] = [lex.same(a, b) for a, b in zip(ri.tolist(), r_idx[ri, rs].tolist())]
    matched = np.flatnonzero(same.any(axis=1))
    if matched.size < min_group:
        return []
    null, null_rows, null_nbrs, null_info = _null_scores(
        ref_r, r_sims, r_idx, r_not_self, r_same, min_null=min_null
    )
    if null.size < 2:
        return []
    nbrs = [idx[i][same[i]] for i in matched]
    scores = _disagreement(cur_r[matched], [ref_r[nb] for nb in nbrs])
    p_rec = conformal_p(null, scores)
    n_m = int(matched.size)
    # Scores that share reference records are not independent (two current copies of one
    # prompt, or a mutual pair a-vs-b and b-vs-a in the null), so tests count each
    # connected group of prompts once: the "unit".
    null_units, cur_units = _units(len(ref), null_rows, null_nbrs, nbrs)

    # Groups over positions 0..n_m-1 of `matched`, formed without looking at the scores;
    # each with the null scores it is compared with.
    all_null = np.arange(null.size)
    groups: list[tuple[str, np.ndarray, np.ndarray]] = [("all_matched", np.arange(n_m), all_null)]
    # A group chosen by its shared answer is compared with the null records giving that
    # answer (one linkage over both sides): in a mixture the answer's wording depends on the
    # template ("2" vs "2 stars"), so the records sharing one wording are exactly those whose
    # matches tend to use another, and the pooled null, mostly same-wording pairs, is
    # anti-conservative for them.  Only an answer the reference never gives (the attack's
    # signature) is compared with the whole null; one the reference gives too rarely among
    # its null records to form a stratum is left to the other groups.
    comp = _linked_components(
        np.concatenate([cur_r[matched], ref_r[null_rows]]), response_threshold, seed=seed
    )
    c_cur, c_null = comp[:n_m], comp[n_m:]
    in_ref = None
    for c in np.unique(c_cur):
        members = np.flatnonzero(c_cur == c)
        if members.size < min_group or members.size >= n_m:
            continue
        stratum = np.flatnonzero(c_null == c)
        if stratum.size >= MIN_NULL_IN_CLUSTER:
            groups.append(("shared_response", members, stratum))
            continue
        if in_ref is None:
            in_ref = _answer_in_reference(ref_r, cur_r[matched], response_threshold, seed=seed)
        if not in_ref[members].any():
            groups.append(("shared_response", members, all_null))
    n_clusters = min(MAX_CLUSTERS, n_m // max(1, cluster_size))
    if n_clusters >= 2:
        # How far answers drift depends on the kind of prompt (open-ended vs factual), so a
        # topic is compared with reference records of the same topic: cluster matched and
        # null prompts together (blind to scores and inputs) and test within each cluster.
        union = np.concatenate([cur_p[matched], ref_p[null_rows]], axis=0)
        _, assign = index.kmeans(union, n_clusters, seed=seed)
        a_cur, a_null = assign[:n_m], assign[n_m:]
        for c in np.unique(a_cur):
            members = np.flatnonzero(a_cur == c)
            null_members = np.flatnonzero(a_null == c)
            if members.size >= min_group and null_members.size >= MIN_NULL_IN_CLUSTER:
                groups.append(("prompt_cluster", members, null_members))

    results = [_unit_test(scores[g], cur_units[g], null[nl], null_units[nl]) for _, g, nl in groups]
    p_raw = np.array([r[0] for r in results])
    q = benjamini_hochberg(p_raw)

    kept: list[tuple[int, set[int], list[str]]] = []
    for j in np.argsort(p_raw, kind="stable"):
        if q[j] > report_alpha:
            break
        _, g, _ = groups[j]
        pulling = set(int(i) for i in g[p_rec[g] <= member_p])
        if not pulling:
            continue
        for _, other, merged in kept:
            if len(pulling & other) / len(pulling | other) >= MERGE_OVERLAP:
                merged.append(groups[j][0])
                break
        else:
            kept.append((int(j), pulling, []))

    findings = []
    for j, members_set, merged in kept:
        kind, g, nl = groups[j]
        group_null = null[nl]
        null_median = float(np.median(group_null))
        null_q99 = float(np.quantile(group_null, 0.99))
        members = np.array(sorted(members_set), dtype=np.int64)
        # most disagreeing first
        members = members[np.argsort(-scores[members], kind="stable")]
        rows = matched[members]
        gs = scores[g]
        _, auc, n_units, n_null_units = results[j]
        examples = []
        for pos in members[:EXAMPLES]:
            i = int(matched[pos])
            r0 = int(nbrs[pos][0])
            examples.append(
                {
                    "id": cur.ids[i],
                    "prompt": excerpt(cur.batch.prompts[i]),  # type: ignore[index]
                    "current_response": excerpt(cur.batch.responses[i]),  # type: ignore[index]
                    "reference_id": ref.ids[r0],
                    "reference_response": excerpt(ref.batch.responses[r0]),  # type: ignore[index]
                    "disagreement": round(float(scores[pos]), 4),
                    "p_record": round(float(p_rec[pos]), 5),
                }
            )
        findings.append(
            Finding(
                check=CHECK,
                summary=(
                    f"{rows.size} current records reuse reference prompts with different answers "
                    f"({kind.replace('_', ' ')} group of {g.size}; "
                    f"{int((gs > null_q99).sum())} beyond the null's 99th percentile, "
                    f"{0.01 * g.size:.1f} expected)"
                ),
                side="current",
                record_ids=tuple(cur.ids[i] for i in rows),
                statistic=auc,
                p_value=float(q[j]),
                effect_size=float(gs.mean() - null.mean()),
                details={
                    "group_kind": kind,
                    "merged_with": merged,
                    "p_raw": float(p_raw[j]),
                    "n_tests": len(groups),
                    "n_group": int(g.size),
                    "n_matched": n_m,
                    "n_current": len(cur),
                    "n_above_null_median": int((gs > null_median).sum()),
                    "expected_above_null_median": round(0.5 * g.size, 2),
                    "n_above_null_q99": int((gs > null_q99).sum()),
                    "expected_above_null_q99": round(0.01 * g.size, 2),
                    "mean_disagreement_group": round(float(gs.mean()), 4),
                    "mean_disagreement_null": round(float(group_null.mean()), 4),
                    "n_null_compared": int(group_null.size),
                    "n_units": n_units,
                    "n_null_units": n_null_units,
                    "auc_vs_null": round(auc, 4),
                    "prompt_threshold": prompt_threshold,
                    **null_info,
                    "assumption": "answers to near-identical prompts agree at least as well "
                    "as answers to the reference's most similar distinct prompts",
                    "method": "disagreement 1 - cos(response, mean matched reference response); "
                    "one-sided Mann-Whitney of the group vs reference leave-one-out scores; "
                    "Benjamini-Hochberg across groups",
                    "examples": examples,
                },
            )
        )
    return findings
