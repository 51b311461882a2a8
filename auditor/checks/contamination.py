"""contamination: generated records that copy items of an evaluation set.

Two views of "copied", as in the GPT-3 paper's contamination study (Brown et al. 2020,
Appendix C): a long word n-gram shared with an evaluation item (13-grams by default,
lowercased with punctuation ignored; an evaluation field shorter than ``n`` words counts
as one gram of its own length when it has at least ``min_n`` words, the paper's lower
bound of 8), and near-duplicate embeddings (cosine of the prompt views) for light edits
the n-grams miss.  Every record's instruction, input and output are compared with every
evaluation item's instruction, input and output.

The evaluation sets travel on the current Snapshot (``auditor.tasks.TaskSnapshot``,
filled by ``auditor selfinstruct --eval FILE``); with none the check has nothing to do.
A shared 13-gram is a certain copy: findings carry ``p_value = 0.0``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from auditor.checks import register
from auditor.errors import AuditorError
from auditor.rouge import rouge_l, tokenize
from auditor.tasks import TaskSnapshot, task_fields
from auditor.textutil import excerpt
from auditor.types import Finding, Snapshot

_FIELDS = ("instruction", "input", "output")


class _GramIndex:
    """Word n-grams of an evaluation set: length-n grams, plus whole short fields."""

    def __init__(self, fields: Sequence[Sequence[str]], n: int, min_n: int) -> None:
        self.by_len: dict[int, dict[tuple[str, ...], set[int]]] = defaultdict(lambda: defaultdict(set))
        for item, texts in enumerate(fields):
            for text in texts:
                toks = tokenize(text)
                if len(toks) >= n:
                    grams = self.by_len[n]
                    for k in range(len(toks) - n + 1):
                        grams[toks[k : k + n]].add(item)
                elif len(toks) >= min_n:
                    self.by_len[len(toks)][toks].add(item)
        self.starts = {length: {g[0] for g in grams} for length, grams in self.by_len.items()}

    def matches(self, text: str) -> dict[int, int]:
        """Evaluation items sharing a gram with ``text``, each with the longest shared gram length."""
        toks = tokenize(text)
        out: dict[int, int] = {}
        for length, grams in self.by_len.items():
            starts = self.starts[length]
            for k in range(len(toks) - length + 1):
                if toks[k] in starts:
                    for item in grams.get(toks[k : k + length], ()):
                        out[item] = max(out.get(item, 0), length)
        return out


@register("contamination", needs=("prompt",), min_records=1)
def contamination(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    n: int = 13,
    min_n: int = 8,
    cosine_threshold: float = 0.95,
    min_rouge: float = 0.5,
    use_embeddings: bool = True,
    max_examples: int = 20,
) -> list[Finding]:
    """Records sharing a word ``n``-gram (or, for short evaluation fields, the whole field
    of at least ``min_n`` words) or a near-duplicate prompt embedding (cosine >=
    ``cosine_threshold``, confirmed by a prompt ROUGE-L of at least ``min_rouge``) with
    an item of an evaluation set: one finding per evaluation
    file, naming each record and the evaluation items it matches.
    """
    del ref, seed
    if not 1 <= min_n <= n <= 100:
        raise AuditorError(f"contamination: n {n} / min_n {min_n} (expected 1 <= min_n <= n <= 100)")
    if not 0.0 <= min_rouge <= 1.0:
        raise AuditorError(f"contamination: min_rouge {min_rouge} (expected 0 <= min_rouge <= 1)")
    if not 0.0 < cosine_threshold <= 1.0:
        raise AuditorError(f"contamination: cosine_threshold {cosine_threshold} (expected 0 < t <= 1)")
    evals = cur.evals if isinstance(cur, TaskSnapshot) else ()
    if not evals:
        return []
    tf = task_fields(cur.batch)
    rec_fields = list(zip(tf.instructions, tf.inputs, tf.outputs))
    findings = []
    for ev in evals:
        ef = task_fields(ev.batch)
        index = _GramIndex(list(zip(ef.instructions, ef.inputs, ef.outputs)), n, min_n)
        hits: dict[int, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
        for i, texts in enumerate(rec_fields):
            for name, text in zip(_FIELDS, texts):
                for item, length in index.matches(text).items():
                    hits[i][item].append(f"{name}:{length}-gram")
        cos_best: dict[int, float] = {}
        if use_embeddings:
            a = cur.views.get("prompt", cur.embeddings)
            b = ev.views.get("prompt", ev.embeddings)
            if a.shape[1] != b.shape[1]:
                raise AuditorError(f"contamination: {ev.batch.path} was embedded with another model")
            rec_prompt = [tokenize(f"{ins}\n{inp}") for ins, inp, _ in rec_fields]
            ev_prompt = [tokenize(f"{ins}\n{inp}") for ins, inp in zip(ef.instructions, ef.inputs)]
            for start in range(0, a.shape[0], 2048):
                sims = a[start : start + 2048] @ b.T
                for off, item in zip(*np.nonzero(sims >= cosine_threshold)):
                    i, item = start + int(off), int(item)
                    # an encoder can put unrelated short prompts close together; a light edit
                    # of a copied prompt keeps most of its words in order
                    if rouge_l(rec_prompt[i], ev_prompt[item]) < min_rouge:
                        continue
                    hits[i][item].append("embedding")
                    cos_best[i] = max(cos_best.get(i, -1.0), float(sims[off, item]))
        if not hits:
            continue
        idx = sorted(hits)
        matched_items = sorted({item for i in idx for item in hits[i]})
        name = ev.batch.path
        findings.append(
            Finding(
                check="contamination",
                summary=(
                    f"{len(idx)} of {len(cur)} records copy {len(matched_items)} items of the "
                    f"evaluation set {name}"
                ),
                side="current",
                record_ids=tuple(cur.ids[i] for i in idx),
                statistic=float(len(idx)),
                p_value=0.0,  # a shared long n-gram or near-identical prompt is a copy, not chance
                effect_size=len(idx) / len(cur),
                details={
                    "eval_file": name,
                    "eval_sha256": ev.batch.sha256,
                    "n": n,
                    "min_n": min_n,
                    "cosine_threshold": cosine_threshold,
                    "min_rouge": min_rouge,
                    "matches": {cur.ids[i]: sorted({ev.ids[item] for item in hits[i]}) for i in idx},
                    "via": {cur.ids[i]: sorted({v for vs in hits[i].values() for v in vs}) for i in idx},
                    "eval_items": [ev.ids[k] for k in matched_items],
                    "examples": [
                        {
                            "id": cur.ids[i],
                            "instruction": excerpt(tf.instructions[i], 160),
                            "eval_id": ev.ids[min(hits[i])],
                            "eval_instruction": excerpt(ef.instructions[min(hits[i])], 160),
                            "cosine": round(cos_best[i], 4) if i in cos_best else None,
                        }
                        for i in idx[:max_examples]
                    ],
                },
            )
        )
    return findings
