"""novelty: instructions that copy a seed or an earlier instruction (ROUGE-L > threshold).

Self-Instruct and Alpaca both keep a generated instruction only when its ROUGE-L F-measure
(``rouge-score``, no stemming, instruction text only) with every seed and every earlier
kept instruction is at most 0.7.  A pool that honours its filter has no such pair; one
that does not was curated around the filter (seed copies with one word changed, near
copies of other generated instructions).  "Earlier" is file order, the order the
pipeline appended to its pool.  Scores equal ``rouge-score``'s (``auditor/rouge.py``).

A pair above the threshold is a certain violation, not a chance result: the finding
carries ``p_value = 0.0`` and the rule's severity grades it.  The histogram of every
instruction's max ROUGE-L to the seeds (the Self-Instruct paper's Figure 3) is in the
details of the summary finding, which is always present.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from auditor.checks import register
from auditor.errors import AuditorError
from auditor.rouge import histogram, max_rouge_to, near_copies_within, tokenize
from auditor.tasks import task_fields
from auditor.textutil import excerpt
from auditor.types import Finding, Snapshot


@register("novelty", min_records=1)
def novelty(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    threshold: float = 0.7,
    against_seeds: bool = True,
    within_batch: bool = True,
    bins: int = 20,
    max_examples: int = 20,
) -> list[Finding]:
    """Instructions whose ROUGE-L F with a seed (the reference) or an earlier generated
    instruction exceeds ``threshold`` (0.7 in both pipelines): one finding per group
    (seed copies, batch near-copies) naming each record and what it copies; plus an
    info finding with the histogram of max ROUGE-L to the seeds.
    """
    del seed  # deterministic
    if not 0.0 < threshold < 1.0:
        raise AuditorError(f"novelty: threshold {threshold} (expected 0 < threshold < 1)")
    if not 1 <= bins <= 200:
        raise AuditorError(f"novelty: bins {bins} (expected 1..200)")
    cur_f, ref_f = task_fields(cur.batch), task_fields(ref.batch)
    q = [tokenize(t) for t in cur_f.instructions]
    r = [tokenize(t) for t in ref_f.instructions]
    n = len(q)
    findings: list[Finding] = []
    to_seed = max_rouge_to(q, r)
    stats = {"seed_lcs_computed": to_seed.lcs_computed}
    if against_seeds:
        hit = np.flatnonzero(to_seed.score > threshold)
        if hit.size:
            pairs = [(int(i), int(to_seed.index[i]), float(to_seed.score[i])) for i in hit]
            findings.append(
                _group(
                    cur, ref, cur_f.instructions, ref_f.instructions, pairs, "seed", threshold, max_examples
                )
            )
    n_within = 0
    if within_batch:
        within, wstats = near_copies_within(q, threshold)
        stats.update({f"batch_{k}": v for k, v in wstats.items()})
        n_within = len(within)
        if within:
            pairs = [(p.later, p.earlier, p.score) for p in within]
            findings.append(
                _group(
                    cur, cur, cur_f.instructions, cur_f.instructions, pairs, "batch", threshold, max_examples
                )
            )
    scores = to_seed.score
    above = int((scores > threshold).sum())
    median = float(np.median(scores)) if n else 0.0
    findings.append(
        Finding(
            check="novelty",
            summary=(
                f"max ROUGE-L of {n} instructions to {len(r)} seeds: median {median:.2f}, "
                f"{above} above {threshold}; {n_within} above {threshold} to an earlier instruction"
            ),
            side="current",
            statistic=float(np.max(scores)) if n else 0.0,
            details={
                "group": "histogram",
                "threshold": threshold,
                "max_rouge_l_to_seeds": histogram(scores, bins),
                "above_to_seeds": above,
                "above_within_batch": n_within,
                "fields_source": cur_f.source,
                "pruning": stats,
            },
        )
    )
    return findings


def _group(
    cur: Snapshot,
    src: Snapshot,
    texts: tuple[str, ...],
    src_texts: tuple[str, ...],
    pairs: list[tuple[int, int, float]],
    kind: str,
    threshold: float,
    max_examples: int,
) -> Finding:
    n = len(cur)
    top = Counter(src.ids[j] for _, j, _ in pairs).most_common(5)
    what = "a seed" if kind == "seed" else "an earlier instruction of the batch"
    return Finding(
        check="novelty",
        summary=(
            f"{len(pairs)} of {n} instructions copy {what} (ROUGE-L > {threshold}); "
            f"most copied: {', '.join(f'{i} ({c})' for i, c in top)}"
        ),
        side="current",
        record_ids=tuple(cur.ids[i] for i, _, _ in pairs),
        statistic=float(len(pairs)),
        p_value=0.0,  # a certain violation of the pipeline's filter
        effect_size=len(pairs) / n,
        details={
            "group": kind,
            "threshold": threshold,
            "copies": {cur.ids[i]: src.ids[j] for i, j, _ in pairs},
            "rouge_l": {cur.ids[i]: round(s, 6) for i, _, s in pairs},
            "examples": [
                {
                    "id": cur.ids[i],
                    "instruction": excerpt(texts[i], 160),
                    "copies": src.ids[j],
                    "source": excerpt(src_texts[j], 160),
                    "rouge_l": round(s, 4),
                }
                for i, j, s in sorted(pairs, key=lambda p: -p[2])[:max_examples]
            ],
        },
    )
