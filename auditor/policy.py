"""Curation policies: what explains the records a round removed or added.

Real curation removes records systematically by design (semantic deduplication, length
and quality filters), so a round test under "membership does not depend on content"
flags every honest step.  This module separates the change a declared (or inferred)
policy explains from the change nothing explains, and tests the policy's own freedom:

- ``parse_policy``: ``--policy dedup:0.9``, ``filter:min_chars=20`` ... (declared);
- ``infer_policy``: the dedup threshold and length filters the step is consistent with;
- ``attribute``: per removed record its reason (a filter, near-duplicate of a kept record
  with the cosine and lexical overlap, edited into an added record, or nothing), per
  added record likewise;
- ``explained_restored``: round B with the explained removals undone, so the membership
  tests of ``auditor/rounds.py`` see only the unexplained change.  This conditions on
  the policy's strata: records a filter removes and the duplicates a dedup drops are
  fixed; only the rest is permuted;
- ``dedup_resolution``: within each duplicate group, which member is kept is the
  curator's free choice; the test permutes that choice inside every group (an exact
  conditional permutation test) and asks whether the removed members differ
  systematically from the kept ones (always the longer answer, one kind of answer).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from auditor.errors import AuditorError
from auditor.types import Batch, Finding, Snapshot

if TYPE_CHECKING:
    from auditor.rounds import RecordDiff

# auditor.rounds and auditor.stats import scipy: they load inside the functions that
# use them, so ``parse_policy`` stays cheap on the CLI's error path.

# An added record this close (cosine) to a removed one, each the other's best match, is
# that record edited, not new content.
CHANGED_COSINE = 0.85
# Inference: a dedup is claimed only when at least this share of the removed records has
# a kept neighbour above the closest kept pair.  One such record is enough: a dedup at a
# high threshold often removes a single record, and a removed record closer to a kept one
# than any two kept records are is what a dedup leaves, whatever the count.  A length
# filter needs MIN_EXPLAINED records beyond the kept range: the shortest record of a
# round is removed at random with probability 1/n, so one would prove nothing.
INFER_MIN_SHARE = 0.2
MIN_EXPLAINED = 3
# A kept pair closer than this is an exact/near-exact copy the step left alone: no dedup.
INFER_MAX_THRESHOLD = 0.995
# Quantile of kept records' nearest kept neighbour taken as the inferred threshold, so a
# handful of borderline pairs (cluster-wise dedup) does not hide a dedup.
INFER_QUANTILE = 0.999

FILTER_KEYS = ("min_chars", "max_chars", "min_response_chars", "max_response_chars")
REASONS = ("filter", "duplicate", "changed", "unexplained")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Policy:
    """A curation step's policy: a cosine dedup threshold, an optional lexical one
    (token-set Jaccard with the nearest kept record), and length filters on the whole
    text or the response.  ``source``: "declared", "inferred" or "none"."""

    dedup: float | None = None
    lexical: float | None = None
    filters: tuple[tuple[str, int], ...] = ()
    source: str = "none"
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.dedup is None and self.lexical is None and not self.filters

    def describe(self) -> str:
        parts = []
        if self.dedup is not None:
            parts.append(f"dedup at cosine >= {self.dedup:.3f}")
        if self.lexical is not None:
            parts.append(f"dedup at token Jaccard >= {self.lexical:.2f}")
        parts += [f"{k}={v}" for k, v in self.filters]
        return f"{self.source}: " + ("; ".join(parts) if parts else "no policy (every change unexplained)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dedup_cosine": self.dedup,
            "dedup_jaccard": self.lexical,
            "filters": {k: v for k, v in self.filters},
            "notes": list(self.notes),
            "text": self.describe(),
        }


def parse_policy(specs: Sequence[str] | None, *, where: str = "--policy", source: str = "declared") -> Policy | None:
    """``--policy`` values (or a rules file's ``policy:`` list) -> a declared Policy; None
    (nothing declared) means infer.  ``where`` prefixes every error message.

    ``dedup:0.9`` (cosine), ``lexical:0.8`` (token Jaccard), ``filter:min_chars=20``,
    ``filter:max_chars=4000``, ``filter:min_response_chars=1``,
    ``filter:max_response_chars=N``, ``filter:empty=response`` (= min_response_chars=1),
    ``none`` (declare that nothing is explained), ``infer``.
    """
    if not specs:
        return None
    dedup: float | None = None
    lexical: float | None = None
    filters: dict[str, int] = {}
    declared_none = False
    seen: set[str] = set()
    expected = "expected dedup:COS, lexical:JACCARD, filter:KEY=N (KEY one of " + ", ".join(FILTER_KEYS) + "), filter:empty=response, none or infer"
    if len(specs) > 1 and any(s.strip().lower() == "infer" for s in specs):
        raise AuditorError(f"{where}: 'infer' cannot be combined with other policies")
    for raw in specs:
        spec = raw.strip()
        kind, _, value = spec.partition(":")
        kind = kind.strip().lower()
        if kind == "infer" and not value:
            return None
        # a threshold or filter given twice is ambiguous (which one did the curator mean?)
        slot = kind if kind != "filter" else "filter:" + value.partition("=")[0].strip()
        if slot in seen:
            raise AuditorError(f"{where}: {raw!r} repeats {slot!r} (give each policy once)")
        seen.add(slot)
        if kind == "none" and not value:
            declared_none = True
            continue
        if kind in ("dedup", "lexical"):
            try:
                v = float(value)
            except ValueError:
                raise AuditorError(f"{where}: {raw!r} has no number after '{kind}:' ({expected})") from None
            if not (0.0 < v <= 1.0) or math.isnan(v):
                raise AuditorError(f"{where}: {raw!r} threshold must be in (0, 1] (got {v})")
            if kind == "dedup":
                dedup = v
            else:
                lexical = v
            continue
        if kind == "filter":
            key, eq, num = value.partition("=")
            key = key.strip()
            if key == "empty" and num.strip() == "response":
                filters["min_response_chars"] = 1
                continue
            if not eq or key not in FILTER_KEYS:
                raise AuditorError(f"{where}: {raw!r} is not a known filter ({expected})")
            try:
                n = int(num)
            except ValueError:
                raise AuditorError(f"{where}: {raw!r} needs an integer after '=' (got {num!r})") from None
            if n < 0:
                raise AuditorError(f"{where}: {raw!r} must be at least 0 (got {n})")
            filters[key] = n
            continue
        raise AuditorError(f"{where}: {raw!r} is not a policy ({expected})")
    if declared_none and (dedup is not None or lexical is not None or filters):
        raise AuditorError(f"{where}: 'none' cannot be combined with other policies")
    return Policy(dedup=dedup, lexical=lexical, filters=tuple(sorted(filters.items())), source=source)


# --------------------------------------------------------------------------------------
# nearest neighbours and lexical overlap


def _nearest(queries: np.ndarray, base: np.ndarray, *, exclude_self: bool = False, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Best cosine of each query row against ``base`` (unit rows) and its index."""
    n = len(queries)
    best = np.full(n, -1.0, dtype=np.float64)
    arg = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(base) == 0:
        return best, arg
    b = np.ascontiguousarray(base, dtype=np.float32)
    for s in range(0, n, chunk):
        sims = np.asarray(queries[s : s + chunk], dtype=np.float32) @ b.T
        if exclude_self:
            rows = np.arange(sims.shape[0])
            sims[rows, rows + s] = -2.0
        j = np.argmax(sims, axis=1)
        arg[s : s + chunk] = j
        best[s : s + chunk] = sims[np.arange(len(j)), j]
    return best, arg


def token_jaccard(x: str, y: str) -> float:
    """Jaccard overlap of the lower-cased word sets of two texts."""
    a, b = set(_WORD.findall(x.lower())), set(_WORD.findall(y.lower()))
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _lengths(batch: Batch, key: str) -> np.ndarray:
    if key.endswith("response_chars"):
        src = batch.responses if batch.responses is not None else batch.texts
    else:
        src = batch.texts
    return np.array([len(t.strip()) for t in src], dtype=np.int64)


def _violates(batch: Batch, filters: Sequence[tuple[str, int]]) -> list[str | None]:
    """Per record, the first filter it fails (None when it passes them all)."""
    out: list[str | None] = [None] * len(batch)
    for key, limit in filters:
        lengths = _lengths(batch, key)
        bad = lengths < limit if key.startswith("min") else lengths > limit
        for i in np.flatnonzero(bad):
            if out[i] is None:
                out[i] = f"{key}={limit}"
    return out


# --------------------------------------------------------------------------------------
# inference


def infer_policy(a: Snapshot, b: Snapshot, d: RecordDiff | None = None) -> Policy:
    """The dedup threshold and length filters step A -> B is consistent with.

    Dedup: a greedy dedup at cosine t keeps no pair at >= t and drops records with a kept
    neighbour at >= t.  The inferred t sits just above the closest kept pairs (their
    ``INFER_QUANTILE``); it is claimed when at least ``INFER_MIN_SHARE`` of the removed
    records (and at least one) have a kept neighbour at >= t.  Length filters: a bound is claimed when no
    kept record crosses it and at least ``MIN_EXPLAINED`` removed records do.
    """
    from auditor.rounds import diff_records

    d = d if d is not None else diff_records(a, b)
    notes: list[str] = []
    dedup: float | None = None
    kept_b = np.asarray(d.kept_b, dtype=np.int64)
    removed = np.asarray(d.removed, dtype=np.int64)
    if len(removed) and len(kept_b) >= 2:
        kept_emb = b.embeddings[kept_b]
        kk, _ = _nearest(kept_emb, kept_emb, exclude_self=True)
        t_kept = float(np.quantile(kk, INFER_QUANTILE)) if len(kk) >= 1000 else float(kk.max())
        rk, _ = _nearest(a.embeddings[removed], kept_emb)
        over = int((rk > t_kept).sum())
        if t_kept >= INFER_MAX_THRESHOLD:
            notes.append(f"no dedup: kept records include pairs at cosine {t_kept:.3f}")
        elif over >= max(1.0, INFER_MIN_SHARE * len(removed)):
            dedup = float(np.nextafter(t_kept, 2.0))
            notes.append(
                f"dedup inferred: {over} of {len(removed)} removed records have a kept neighbour above "
                f"cosine {t_kept:.3f}, the closest kept pair"
            )
        else:
            notes.append(
                f"no dedup: only {over} of {len(removed)} removed records lie above the closest kept pair ({t_kept:.3f})"
            )
    filters: list[tuple[str, int]] = []
    if len(removed) and len(kept_b):
        for key in FILTER_KEYS:
            if key.endswith("response_chars") and (a.batch.responses is None or b.batch.responses is None):
                continue
            la, lb = _lengths(a.batch, key)[removed], _lengths(b.batch, key)[kept_b]
            if key.startswith("min"):
                limit = int(lb.min())
                n_out = int((la < limit).sum())
            else:
                limit = int(lb.max())
                n_out = int((la > limit).sum())
            if n_out >= MIN_EXPLAINED:
                filters.append((key, limit))
                notes.append(f"{key}={limit} inferred: {n_out} removed records cross it, no kept record does")
    return Policy(dedup=dedup, filters=tuple(filters), source="inferred", notes=tuple(notes))


# --------------------------------------------------------------------------------------
# attribution


@dataclass(frozen=True)
class Attribution:
    """Why each removed record (indices ``diff.removed`` into A) and each added record
    (``diff.added`` into B) changed.  ``*_match``: the index of the record that explains
    it (a kept record of B for "duplicate", the added/removed partner for "changed",
    -1 otherwise); ``*_cosine`` / ``*_jaccard``: the similarity to it."""

    policy: Policy
    diff: RecordDiff
    removed_reason: tuple[str, ...]
    removed_match: tuple[int, ...]
    removed_cosine: tuple[float, ...]
    removed_jaccard: tuple[float, ...]
    added_reason: tuple[str, ...]
    added_match: tuple[int, ...]
    added_cosine: tuple[float, ...]
    counts: dict[str, int] = field(default_factory=dict)

    def removed_by(self, reason: str) -> list[int]:
        """A-indices of the removed records with this reason (prefix match: "filter")."""
        return [i for i, r in zip(self.diff.removed, self.removed_reason, strict=True) if r.startswith(reason)]

    def added_by(self, reason: str) -> list[int]:
        return [j for j, r in zip(self.diff.added, self.added_reason, strict=True) if r.startswith(reason)]

    def to_dict(self, a: Snapshot, b: Snapshot, *, max_rows: int = 200) -> dict[str, Any]:
        rows = []
        for i, reason, m, c, jac in zip(
            self.diff.removed, self.removed_reason, self.removed_match, self.removed_cosine, self.removed_jaccard, strict=True
        ):
            rows.append(
                {
                    "id": a.ids[i],
                    "reason": reason,
                    "match_id": b.ids[m] if m >= 0 else None,
                    "cosine": round(c, 4) if m >= 0 else None,
                    "jaccard": round(jac, 4) if m >= 0 else None,
                }
            )
        # the unexplained first: those are what a reviewer reads
        rows.sort(key=lambda r: (r["reason"] != "unexplained", r["reason"]))
        return {
            "policy": self.policy.to_dict(),
            "counts": dict(self.counts),
            "removed": rows[:max_rows],
            "removed_rows_total": len(rows),
            "added": [
                {"id": b.ids[j], "reason": r, "match_id": a.ids[m] if m >= 0 else None, "cosine": round(c, 4) if m >= 0 else None}
                for j, r, m, c in zip(self.diff.added, self.added_reason, self.added_match, self.added_cosine, strict=True)
            ][:max_rows],
        }


def attribute(a: Snapshot, b: Snapshot, policy: Policy | None = None, d: RecordDiff | None = None) -> Attribution:
    """Attribute every removed and added record of step A -> B (``policy=None``: infer).

    Order of explanations for a removed record: edited into an added record (mutual best
    match at cosine >= ``CHANGED_COSINE``), a filter it fails, a near-duplicate of a kept
    record (cosine >= the dedup threshold, or token Jaccard >= the lexical one), else
    unexplained.  Added records are "changed" (the edit of a removed one) or unexplained.
    """
    from auditor.rounds import diff_records

    d = d if d is not None else diff_records(a, b)
    pol = policy if policy is not None else infer_policy(a, b, d)
    removed = np.asarray(d.removed, dtype=np.int64)
    added = np.asarray(d.added, dtype=np.int64)
    kept_b = np.asarray(d.kept_b, dtype=np.int64)
    nr, na = len(removed), len(added)
    r_reason = ["unexplained"] * nr
    r_match = [-1] * nr
    r_cos = [0.0] * nr
    r_jac = [0.0] * nr
    a_reason = ["unexplained"] * na
    a_match = [-1] * na
    a_cos = [0.0] * na

    if nr and na:
        ra, ja = _nearest(a.embeddings[removed], b.embeddings[added])
        ar, jr = _nearest(b.embeddings[added], a.embeddings[removed])
        for x in range(nr):
            y = int(ja[x])
            if ra[x] >= CHANGED_COSINE and int(jr[y]) == x:
                r_reason[x], r_match[x], r_cos[x] = "changed", int(added[y]), float(ra[x])
                r_jac[x] = token_jaccard(a.texts[int(removed[x])], b.texts[int(added[y])])
                a_reason[y], a_match[y], a_cos[y] = "changed", int(removed[x]), float(ra[x])

    if nr and pol.filters:
        viol = _violates(a.batch, pol.filters)
        for x, i in enumerate(removed):
            if r_reason[x] == "unexplained" and viol[int(i)] is not None:
                r_reason[x] = f"filter:{viol[int(i)]}"

    if nr and len(kept_b) and (pol.dedup is not None or pol.lexical is not None):
        kept_emb = b.embeddings[kept_b]
        cos, arg = _nearest(a.embeddings[removed], kept_emb)
        for x, i in enumerate(removed):
            if r_reason[x] != "unexplained":
                continue
            m = int(kept_b[int(arg[x])])
            jac = token_jaccard(a.texts[int(i)], b.texts[m]) if pol.lexical is not None or cos[x] >= 0.5 else 0.0
            if (pol.dedup is not None and cos[x] >= pol.dedup) or (pol.lexical is not None and jac >= pol.lexical):
                r_reason[x], r_match[x], r_cos[x], r_jac[x] = "duplicate", m, float(cos[x]), jac

    counts: dict[str, int] = {"kept": len(kept_b), "removed": nr, "added": na}
    for r in r_reason:
        key = "removed_" + r.split(":")[0] if not r.startswith("filter") else "removed_" + r
        counts[key] = counts.get(key, 0) + 1
    counts["removed_unexplained"] = counts.get("removed_unexplained", 0)
    counts["added_changed"] = a_reason.count("changed")
    counts["added_unexplained"] = a_reason.count("unexplained")
    return Attribution(
        policy=pol,
        diff=d,
        removed_reason=tuple(r_reason),
        removed_match=tuple(r_match),
        removed_cosine=tuple(r_cos),
        removed_jaccard=tuple(r_jac),
        added_reason=tuple(a_reason),
        added_match=tuple(a_match),
        added_cosine=tuple(a_cos),
        counts=counts,
    )


def concat(parts: Sequence[Snapshot]) -> Snapshot:
    """Snapshots joined in order (one model; views kept when every part has them)."""
    first = parts[0]
    ids = tuple(i for p in parts for i in p.ids)

    def joined(name: str) -> tuple[Any, ...] | None:
        vals = [getattr(p.batch, name) for p in parts]
        return None if any(v is None for v in vals) else tuple(x for v in vals for x in v)

    batch = Batch(
        path=first.batch.path,
        sha256=first.batch.sha256,
        ids=ids,
        texts=tuple(t for p in parts for t in p.texts),
        hashes=tuple(h for p in parts for h in p.batch.hashes),
        lines=tuple(x for p in parts for x in p.batch.lines),
        text_fields=first.batch.text_fields,
        prompts=joined("prompts"),
        responses=joined("responses"),
        prompt_fields=first.batch.prompt_fields,
        response_fields=first.batch.response_fields,
    )
    common = set.intersection(*(set(p.views) for p in parts)) if parts else set()
    views = {k: np.concatenate([np.asarray(p.views[k]) for p in parts]) for k in sorted(common)}
    emb = np.concatenate([np.asarray(p.embeddings) for p in parts])
    return Snapshot(batch=batch, embeddings=emb, model=first.model, views=views)


def explained_restored(a: Snapshot, b: Snapshot, att: Attribution) -> tuple[Snapshot, np.ndarray, np.ndarray]:
    """Round B with every explained change undone: B's kept and unexplained added
    records plus A's explained removals (an edit is replaced by its original).  Returns
    (B', the B-indices it took, the A-indices it restored), so cluster labels follow."""
    d = att.diff
    unexplained_added = set(att.added_by("unexplained"))
    take_b = [j for j in range(len(b)) if j not in set(d.added) or j in unexplained_added]
    restore_a = [i for i, r in zip(d.removed, att.removed_reason, strict=True) if r != "unexplained"]
    parts = [b.subset(take_b)]
    if restore_a:
        parts.append(a.subset(restore_a))
    return concat(parts), np.asarray(take_b, dtype=np.int64), np.asarray(restore_a, dtype=np.int64)


# --------------------------------------------------------------------------------------
# the duplicate-resolution test


@dataclass(frozen=True)
class DupGroups:
    """Duplicate groups of one or more steps: per group, the feature rows of its members
    and which member was kept.  ``x``: (n, r) projected embeddings; ``length``: (n,) log
    length of the response (or text); ``member_of``: group of each row; ``kept``: the
    row kept in each group; ``ids``/``texts``: per row, for naming records."""

    x: np.ndarray
    length: np.ndarray
    member_of: np.ndarray
    kept: np.ndarray
    ids: tuple[str, ...]
    texts: tuple[str, ...]
    step: tuple[str, ...]


def dup_groups(
    steps: Sequence[tuple[Snapshot, Snapshot, Attribution]], projection: np.ndarray | None = None, labels: Sequence[str] | None = None
) -> DupGroups:
    """The duplicate groups of each step: a kept record of B and the removed records of A
    attributed to it as its near-duplicates."""
    xs: list[np.ndarray] = []
    lens: list[float] = []
    member: list[int] = []
    kept: list[int] = []
    ids: list[str] = []
    texts: list[str] = []
    step: list[str] = []
    g = 0
    for s, (a, b, att) in enumerate(steps):
        groups: dict[int, list[int]] = {}
        for i, r, m in zip(att.diff.removed, att.removed_reason, att.removed_match, strict=True):
            if r == "duplicate":
                groups.setdefault(m, []).append(i)
        resp_a = a.batch.responses if a.batch.responses is not None else a.texts
        resp_b = b.batch.responses if b.batch.responses is not None else b.texts
        for m, rem in sorted(groups.items()):
            kept.append(len(ids))
            rows = [(b.embeddings[m], resp_b[m], b.ids[m], b.texts[m])] + [
                (a.embeddings[i], resp_a[i], a.ids[i], a.texts[i]) for i in rem
            ]
            for emb, resp, rid, text in rows:
                xs.append(np.asarray(emb, dtype=np.float64))
                lens.append(math.log1p(len(resp.strip())))
                member.append(g)
                ids.append(rid)
                texts.append(text)
                step.append(labels[s] if labels is not None else str(s))
            g += 1
    dim = projection.shape[1] if projection is not None else (len(xs[0]) if xs else 0)
    x = np.stack(xs) if xs else np.zeros((0, dim))
    if projection is not None and len(x):
        x = x @ projection
    return DupGroups(
        x=x,
        length=np.asarray(lens, dtype=np.float64),
        member_of=np.asarray(member, dtype=np.int64),
        kept=np.asarray(kept, dtype=np.int64),
        ids=tuple(ids),
        texts=tuple(texts),
        step=tuple(step),
    )


def _resolution_stats(x: np.ndarray, length: np.ndarray, member_of: np.ndarray, kept_rows: np.ndarray, w: np.ndarray, sums_x: np.ndarray, sums_l: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum over groups of mean(removed) - kept, for embeddings and log length.
    ``kept_rows``: (..., G) chosen kept row per group."""
    # mean of the others minus the kept one = S/(s-1) - x_k * s/(s-1)
    ex = sums_x - np.einsum("g,...gd->...d", w, x[kept_rows])
    el = sums_l - (length[kept_rows] * w).sum(axis=-1)
    return ex, el


def dedup_resolution(
    groups: DupGroups, *, seed: int, n_permutations: int = 999, max_ids: int = 200, check: str = "dedup_resolution"
) -> Finding:
    """Were duplicate groups resolved systematically (removed members unlike kept ones)?

    H0: within each group the kept member is a uniform choice.  Exact conditional
    permutation test: redraw the kept member of every group independently; two
    statistics (|sum over groups of mean removed - kept| squared in the projected
    embedding, and the same for log response length), each divided by its mean over the
    observed and permuted draws, maximised; p = (k+1)/(B+1).  record_ids: the removed
    members lying furthest along the winning direction (the records a systematic rule
    chose to drop).
    """
    from auditor.rounds import clip_example
    from auditor.stats import permutation_p_value

    n_groups = len(groups.kept)
    if n_groups < 2:
        return Finding(
            check=check,
            summary=f"insufficient data: {n_groups} duplicate group(s); the resolution test needs at least 2",
            side="reference",
            details={"n_groups": n_groups},
        )
    rng = np.random.default_rng(seed)
    member_of = groups.member_of
    sizes = np.bincount(member_of, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    w = sizes / np.maximum(sizes - 1, 1)
    x, length = groups.x, groups.length
    sums_x = np.zeros((n_groups, x.shape[1]))
    np.add.at(sums_x, member_of, x)
    sums_x = (sums_x / np.maximum(sizes - 1, 1)[:, None]).sum(axis=0)
    sums_l = (np.bincount(member_of, weights=length, minlength=n_groups) / np.maximum(sizes - 1, 1)).sum()
    ex_obs, el_obs = _resolution_stats(x, length, member_of, groups.kept, w, sums_x, sums_l)
    ex_null = np.empty((n_permutations, x.shape[1]))
    el_null = np.empty(n_permutations)
    chunk = max(1, int(2e6 // max(1, n_groups * max(1, x.shape[1]))))
    for s in range(0, n_permutations, chunk):
        bsz = min(chunk, n_permutations - s)
        pick = starts[None, :] + (rng.random((bsz, n_groups)) * sizes[None, :]).astype(np.int64)
        ex_null[s : s + bsz], el_null[s : s + bsz] = _resolution_stats(x, length, member_of, pick, w, sums_x, sums_l)
    d_obs = np.array([float(ex_obs @ ex_obs), float(el_obs**2)])
    d_null = np.stack([np.einsum("bd,bd->b", ex_null, ex_null), el_null**2], axis=1)
    scale = np.concatenate([d_obs[None, :], d_null]).mean(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    s_obs, s_null = d_obs / scale, (d_null / scale).max(axis=1)
    p = permutation_p_value(float(s_obs.max()), s_null)
    which = "length" if s_obs[1] >= s_obs[0] else "embedding"
    kept_set = set(int(k) for k in groups.kept)
    removed_rows = np.array([r for r in range(len(member_of)) if r not in kept_set], dtype=np.int64)
    kept_of = groups.kept[member_of[removed_rows]]
    if which == "length":
        diff_r = length[removed_rows] - length[kept_of]
        sign = 1.0 if el_obs >= 0 else -1.0
        score = sign * diff_r
        longer = float((diff_r > 0).mean()) if len(diff_r) else 0.0
        what = (
            f"removed member {'longer' if sign > 0 else 'shorter'} than the kept one in "
            f"{(longer if sign > 0 else float((diff_r < 0).mean())):.0%} of {len(diff_r)} removals"
        )
        effect = float(abs(el_obs) / max(1, n_groups) / (np.std(length) or 1.0))
    else:
        unit = ex_obs / (np.linalg.norm(ex_obs) or 1.0)
        score = (x[removed_rows] - x[kept_of]) @ unit
        what = f"removed members lie on one side of their kept duplicate in {float((score > 0).mean()):.0%} of {len(score)} removals"
        sd = float(np.std(x @ unit)) or 1.0
        effect = float(np.linalg.norm(ex_obs) / max(1, n_groups) / sd)
    order = np.argsort(-score, kind="stable")
    pointed = [int(removed_rows[i]) for i in order if score[i] > 0]
    # Pooled over a chain, the honest steps' groups hold as many removed-longer members
    # as removed-shorter ones; name only the records of the steps whose own groups show
    # the pattern (each step's test at 0.05: a pointer, the p-value stays the pooled one).
    systematic = _systematic_steps(groups, seed=seed) if len(set(groups.step)) > 1 else None
    if systematic:
        pointed = [r for r in pointed if groups.step[r] in systematic]
    pointed = pointed[:max_ids]
    return Finding(
        check=check,
        summary=(
            f"duplicate groups resolved {'systematically' if p < 0.05 else 'without a detectable pattern'} "
            f"({which}): {what}; p={p:.3g} (kept member redrawn within each of {n_groups} groups, B={n_permutations})"
        ),
        side="reference",
        record_ids=tuple(groups.ids[r] for r in pointed),
        statistic=float(s_obs.max()),
        p_value=p,
        effect_size=effect,
        details={
            "statistic_won": which,
            "n_groups": n_groups,
            "n_removed_in_groups": len(removed_rows),
            "p_components": {
                "embedding": permutation_p_value(float(d_obs[0]), d_null[:, 0]),
                "length": permutation_p_value(float(d_obs[1]), d_null[:, 1]),
            },
            "mean_log_length_removed_minus_kept": float(el_obs / n_groups),
            "permutations": n_permutations,
            "steps": sorted(set(groups.step[r] for r in pointed)),
            "steps_resolved_systematically": sorted(systematic) if systematic is not None else None,
            "examples": [clip_example(groups.texts[r]) for r in pointed[:5]],
        },
    )


def _step_groups(groups: DupGroups, step: str) -> DupGroups:
    """The groups of one step (rows of a group are contiguous and share its step)."""
    rows = np.flatnonzero(np.asarray(groups.step) == step)
    old_groups, member = np.unique(groups.member_of[rows], return_inverse=True)
    pos = {int(r): k for k, r in enumerate(rows)}
    return DupGroups(
        x=groups.x[rows],
        length=groups.length[rows],
        member_of=member.astype(np.int64),
        kept=np.asarray([pos[int(groups.kept[g])] for g in old_groups], dtype=np.int64),
        ids=tuple(groups.ids[r] for r in rows),
        texts=tuple(groups.texts[r] for r in rows),
        step=tuple(groups.step[r] for r in rows),
    )


def _systematic_steps(groups: DupGroups, *, seed: int, level: float = 0.05) -> set[str]:
    """The steps whose own duplicate groups reject uniform resolution at ``level``."""
    out = set()
    for step in sorted(set(groups.step)):
        sub = _step_groups(groups, step)
        if len(sub.kept) < 2:
            continue
        f = dedup_resolution(sub, seed=seed, n_permutations=999, max_ids=0)
        if f.p_value is not None and f.p_value < level:
            out.add(step)
    return out


def projection_of(emb: np.ndarray, dim: int = 32) -> np.ndarray:
    """Top principal directions (d, dim) of a set of embeddings, fixed before any
    permutation so the tests that use it stay exact."""
    x = np.asarray(emb, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x[: min(len(x), 5000)], full_matrices=False)
    return np.ascontiguousarray(vt[: min(dim, vt.shape[0])].T)
