"""Curation operations: the library behind ``auditor snapshot``, ``history``, ``diff`` and
``trend`` (one call per command; cli.py only parses, calls and renders).

The statistics live in ``auditor/rounds.py``; grading reuses the gate
(``auditor/gate.py``: ``plan``, ``run_rules``, ``grade``, ``assemble``), so a diff or a
trend is judged exactly as an audit is; the diff's Markdown is ``auditor/report/rounds.py``.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from auditor.gate import GATE_CHECK, assemble, grade, grade_all, plan, run_rules
from auditor.policy import (
    Policy,
    attribute,
    concat,
    dedup_resolution,
    dup_groups,
    explained_restored,
    parse_policy,
    projection_of,
)
from auditor.rounds import (
    DIFF_CHECKS,
    TREND_CHECKS,
    RecordDiff,
    assign_clusters,
    clip_example,
    cluster_shift,
    cluster_table,
    diff_records,
    round_drift,
)
from auditor.rounds import (
    trend as trend_findings,
)
from auditor.rules import Rule, Rules, load_rules
from auditor.store import INDEX_FILE, Manifest, Problem, Store, validate_name, validate_sha256
from auditor.types import AuditorError, Finding, Report, RuleOutcome, Snapshot

StoreLike = Store | str | os.PathLike[str]


def _open(store: StoreLike) -> Store:
    return store if isinstance(store, Store) else Store.open(store)


def permutations_for(threshold: float) -> int:
    """Permutations whose smallest p-value, 1/(B+1), is a tenth of ``threshold`` (at least
    999, at most 19999): a permutation test must be able to reach the gate's threshold
    with room to spare, or it could never fail however strong the evidence."""
    return int(min(19999, max(999, int(np.ceil(10.0 / threshold)) - 1)))


def _extra_rules(rules: Rules, checks: Sequence[str], why: str) -> tuple[Rules, dict[str, Rule]]:
    """``rules`` plus one fail rule per round test (they share the Bonferroni split), and
    the rule that grades each test.  A user rule already called like a test keeps its name;
    the test's rule is then suffixed, so neither grades the other's findings."""
    names = {r.name for r in rules.rules}
    extra: dict[str, Rule] = {}
    for c in checks:
        name = c if c not in names else f"{c} (curation)"
        extra[c] = Rule(name=name, check=c, severity="fail", why=why)
    return dataclasses.replace(rules, rules=tuple(rules.rules) + tuple(extra.values())), extra


# --------------------------------------------------------------------------------------
# snapshot


def snapshot(
    data: str | Path,
    store: str | Path,
    name: str,
    *,
    parent: str | None = None,
    text_fields: Sequence[str] | None = None,
    id_field: str | None = None,
    rules: str | Path | Rules | None = None,
    basis_k: int | None = None,
    seed: int = 0,
    model: str | Path | None = None,
    device: str = "auto",
    encoder: Any = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: Any = None,
) -> Manifest:
    """Record the records in ``data`` as curation round ``name`` (child of ``parent``).

    Everything a user can get wrong (the name, the parent, an existing name, a file that
    is not a store) is refused before the input is read or embedded, and a refusal
    creates nothing: the store directory is made only once the round is embedded.
    ``rules`` decides which prompt/response views are embedded and stored.
    """
    from auditor.api import load_batch, snapshot_of

    validate_name(name)
    if parent is not None:
        validate_name(parent, "--parent")
    root = Path(store)
    if root.exists() and not root.is_dir():
        raise AuditorError(f"{root}: --store must be a directory (it is a file)")
    names = Store.open(root).names() if (root / INDEX_FILE).exists() else []
    # checked again under the store's lock when the round is added
    if name in names:
        raise AuditorError(f"--name: snapshot {name!r} already exists in {root}")
    if parent is not None and parent not in names:
        raise AuditorError(
            f"--parent: no snapshot named {parent!r} in {root} (snapshots: {', '.join(names) or 'none yet'})"
        )
    if basis_k is not None and basis_k < 1:
        raise AuditorError(f"--basis-k: must be at least 1 (got {basis_k})")
    ruleset = rules if isinstance(rules, Rules) else load_rules(rules)
    batch = load_batch(data, text_fields, id_field)
    if encoder is None:
        from auditor.encoders import load_encoder

        encoder = load_encoder(model, device=device)
    snap = snapshot_of(
        batch,
        encoder,
        cache_dir=cache_dir,
        views=sorted(ruleset.needs()),
        batch_size=batch_size,
        progress=progress,
    )
    return Store.create(root).add_snapshot(snap, name, parent=parent, basis_k=basis_k, seed=seed)


# --------------------------------------------------------------------------------------
# history


@dataclass(frozen=True)
class HistoryResult:
    """``auditor history``: one row per round (creation order), the head manifest's
    sha256, and with ``verify`` the problems found (rows are empty when there are any).
    ``after_pinned``: rounds added after a pinned ``--head`` (None when none was pinned)."""

    rows: tuple[Mapping[str, Any], ...]
    head: str | None
    verified: bool = False
    problems: tuple[Problem, ...] = ()
    after_pinned: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"head": self.head, "rounds": [dict(r) for r in self.rows]}


def history_rows(store: StoreLike, *, seed: int, n_permutations: int = 999) -> list[dict[str, Any]]:
    """One row per stored round in creation order: counts, changes against its parent,
    cluster-share change (total variation distance on the fixed basis) and
    ``round_drift`` against its parent (effect in SD, p).  Every snapshot is checked
    against its manifest on load."""
    st = _open(store)
    manifests = st.manifests()
    cache: dict[str, Snapshot] = {}

    def load(name: str) -> Snapshot:
        if name not in cache:
            cache[name] = st.load(name)
        return cache[name]

    rows = []
    for m in manifests:
        row: dict[str, Any] = {
            "seq": m.seq,
            "name": m.name,
            "parent": m.parent,
            "created": m.created,
            "n_records": m.n_records,
            "input_path": m.input["path"],
            "input_sha256": m.input["sha256"],
            "manifest_sha256": m.sha256,
            "n_added": None,
            "n_removed": None,
            "n_kept": None,
            "n_reided": None,
            "cluster_tv": None,
            "drift_effect_sd": None,
            "drift_p": None,
        }
        if m.parent is not None:
            a, b = load(m.parent), load(m.name)
            row.update(diff_records(a, b).to_dict())
            pa = np.asarray(st.manifest(m.parent).cluster_counts, dtype=float)
            pb = np.asarray(m.cluster_counts, dtype=float)
            row["cluster_tv"] = float(0.5 * np.abs(pa / max(pa.sum(), 1) - pb / max(pb.sum(), 1)).sum())
            f = round_drift(a, b, seed=seed, n_permutations=n_permutations)
            row["drift_effect_sd"], row["drift_p"] = f.effect_size, f.p_value
        rows.append(row)
    return rows


def history(
    store: StoreLike,
    *,
    seed: int = 0,
    n_permutations: int = 999,
    verify: bool = False,
    head: str | None = None,
) -> HistoryResult:
    """The rounds of a store; with ``verify`` every hash is recomputed first (and with
    ``head`` the newest rounds are checked against that pinned manifest sha256), and a
    store with problems gets no rows: nothing is computed on altered data."""
    pinned = validate_sha256(head) if head is not None else None
    st = _open(store)
    if verify or pinned is not None:
        problems = st.verify(head=pinned)
        if problems:
            return HistoryResult(rows=(), head=st.head(), verified=True, problems=tuple(problems))
    after = None
    if pinned is not None:
        pos = st.pinned_position(pinned)
        after = None if pos is None else len(st.names()) - 1 - pos
    rows = history_rows(st, seed=seed, n_permutations=n_permutations)
    return HistoryResult(
        rows=tuple(rows), head=st.head(), verified=verify or pinned is not None, after_pinned=after
    )


# --------------------------------------------------------------------------------------
# diff


@dataclass(frozen=True)
class DiffResult:
    """``auditor diff A B``: the graded Report, what changed record by record, the two
    rounds and the share of every basis cluster in each (for the Markdown)."""

    report: Report
    records: RecordDiff
    reference: Snapshot
    current: Snapshot
    a_name: str
    b_name: str
    clusters: tuple[Mapping[str, Any], ...] = ()


# The rules compare round A with B's unexplained added records; fewer than this many say
# nothing a reviewer can use (a trigger-phrase test on 17 records flags whatever those 17
# share), so the rules get an info "insufficient data" note instead.
MIN_ADDED = 50


def _policy_of(policy: Policy | Sequence[str] | None, rules: Rules | None = None) -> Policy | None:
    """The policy a step is judged under: the one passed (``--policy``) wins, then the
    rules file's ``policy:``, else None (inferred from the data)."""
    if isinstance(policy, Policy):
        return policy
    if policy is not None:
        return parse_policy(list(policy))
    if rules is not None and rules.policy:
        return parse_policy(list(rules.policy), where=f"{rules.path}: policy", source=f"declared in {rules.path}")
    return None


def diff_block(att: Any, graded: Sequence[Finding]) -> dict[str, Any]:
    """What a renderer shows first for a round step, in reading order: the policy, the
    counts (kept, removed by reason, added by reason), then the unexplained change (the
    graded findings at warn or fail).  report.md and HTML show ``rows`` as a table and
    ``unexplained`` as a list; the attribution table (``details["attribution"]``) goes
    below, folded."""
    c = att.counts
    rows: list[list[Any]] = [["kept", int(c.get("kept", 0))], ["removed", int(c.get("removed", 0))]]
    reasons = sorted(k for k in c if k.startswith("removed_") and k != "removed_unexplained" and c[k])
    rows += [[f"removed: {k[len('removed_'):]}", int(c[k])] for k in reasons]
    rows += [
        ["removed: unexplained", int(c.get("removed_unexplained", 0))],
        ["added", int(c.get("added", 0))],
        ["added: edits of removed records", int(c.get("added_changed", 0))],
        ["added: unexplained", int(c.get("added_unexplained", 0))],
    ]
    unexplained = [
        {"check": f.check, "rule": f.rule, "severity": f.severity, "p_value": f.p_value, "summary": f.summary}
        for f in graded
        if f.severity in ("warn", "fail") and f.check != GATE_CHECK
    ]
    order = {"fail": 0, "warn": 1}
    unexplained.sort(key=lambda u: (order[str(u["severity"])], u["p_value"] if u["p_value"] is not None else 1.0))
    return {"policy": att.policy.describe(), "rows": rows, "unexplained": unexplained}


def diff_report(
    a: Snapshot,
    b: Snapshot,
    rules: Rules,
    *,
    seed: int,
    basis: np.ndarray | None = None,
    a_clusters: np.ndarray | None = None,
    b_clusters: np.ndarray | None = None,
    n_permutations: int | None = None,
    device: str = "auto",
    progress: Any = None,
    policy: Policy | Sequence[str] | None = None,
    min_added: int = MIN_ADDED,
) -> tuple[Report, RecordDiff]:
    """The Report of round B against round A, conditional on the curation policy.

    Every removed and added record is first attributed (``auditor.policy.attribute``):
    a filter, a near-duplicate of a kept record, an edit, or nothing.  ``policy=None``
    infers the policy from the data; the report says which.  Then:

    - ``round_drift`` and ``cluster_shift`` compare A with B' = B with the explained
      removals undone, so they test only the unexplained change (the policy's strata
      are held fixed, the rest permuted under the membership null);
    - ``dedup_resolution``: were the duplicate groups resolved systematically (the kept
      member redrawn within each group);
    - the rules' checks compare A with B's **unexplained added records** (exchangeable
      with A's under the membership null); with fewer than ``min_added`` of them the
      rules get an info "insufficient data" note;
    - an info finding ``round_records`` with the counts by reason and the attribution.

    All findings are graded by the gate, the Bonferroni split counting the rules plus
    the round tests.  ``n_permutations=None`` picks enough for the smallest reachable
    p-value to sit well below the gate's threshold.
    """
    full, extra = _extra_rules(rules, DIFF_CHECKS, "curation-round test (auditor/rounds.py, auditor/policy.py)")
    if n_permutations is None:
        n_permutations = permutations_for(full.fail_threshold)
    d = diff_records(a, b)
    att = attribute(a, b, _policy_of(policy, rules), d)
    b_adj, take_b, restore_a = explained_restored(a, b, att)
    added_u = att.added_by("unexplained")
    findings: list[Finding] = []
    outcomes: list[RuleOutcome] = []
    if len(added_u) >= min_added:
        added = b.subset(added_u)
        planned = plan(a, added, rules)
        raw = run_rules(a, added, rules, seed=seed, device=device, outcomes=planned, progress=progress)
        # graded against the full rule set: the Bonferroni denominator counts the round tests
        findings.extend(grade_all(raw, full))
        outcomes.extend(planned)
    else:
        reason = (
            "nothing unexplained was added: the rules compare round A with B's unexplained added records"
            if not added_u
            else f"insufficient data: {len(added_u)} unexplained added records; the rules need at least "
            f"{min_added} to compare them with round A"
        )
        status: Literal["skipped", "insufficient"] = "skipped" if not added_u else "insufficient"
        for r in rules.rules:
            outcomes.append(RuleOutcome(r.name, r.check, status, reason))
            if added_u:
                findings.append(
                    Finding(
                        check=GATE_CHECK,
                        summary=f"rule {r.name} did not run: {reason}",
                        side="current",
                        rule=r.name,
                        details={"outcome": status, "check": r.check, "reason": reason, "needs": min_added},
                    )
                )
    findings.append(
        grade(round_drift(a, b_adj, seed=seed, n_permutations=n_permutations), extra["round_drift"], full)
    )
    outcomes.append(RuleOutcome(extra["round_drift"].name, "round_drift", "ran"))
    shift = extra["cluster_shift"]
    if a_clusters is None and basis is not None:
        a_clusters = assign_clusters(a.embeddings, basis)
    if b_clusters is None and basis is not None:
        b_clusters = assign_clusters(b.embeddings, basis)
    if a_clusters is not None and b_clusters is not None:
        ca, cb = np.asarray(a_clusters), np.asarray(b_clusters)
        cb_adj = np.concatenate([cb[take_b], ca[restore_a]]).astype(np.int64)
        shifted = cluster_shift(a, b_adj, basis, a_clusters=ca, b_clusters=cb_adj)
        findings.extend(grade(f, shift, full) for f in shifted)
        outcomes.append(RuleOutcome(shift.name, "cluster_shift", "ran"))
    else:
        outcomes.append(RuleOutcome(shift.name, "cluster_shift", "skipped", "no cluster basis given"))
    res = extra["dedup_resolution"]
    groups = dup_groups([(a, b, att)], projection_of(a.embeddings))
    if len(groups.kept) >= 2:
        findings.append(grade(dedup_resolution(groups, seed=seed, n_permutations=n_permutations), res, full))
        outcomes.append(RuleOutcome(res.name, "dedup_resolution", "ran"))
    else:
        outcomes.append(
            RuleOutcome(res.name, "dedup_resolution", "skipped", f"{len(groups.kept)} duplicate group(s): nothing to resolve")
        )
    c = att.counts
    by_reason = ", ".join(f"{k[len('removed_'):]} {v}" for k, v in sorted(c.items()) if k.startswith("removed_") and v)
    block = diff_block(att, findings)
    findings.append(
        Finding(
            check="round_records",
            summary=f"{len(d.kept_a)} kept, {len(d.removed)} removed ({by_reason or 'none'}), {len(d.added)} added "
            f"({c['added_changed']} edits, {c['added_unexplained']} unexplained); policy {att.policy.describe()}",
            side="current",
            record_ids=tuple(b.ids[j] for j in d.added),
            details={
                **d.to_dict(),
                "rules_compared": "reference round vs the current round's unexplained added records"
                if len(added_u) >= min_added
                else "too few unexplained added records: only the round tests apply",
                "removed_ids": [a.ids[i] for i in d.removed],
                "unexplained_removed_ids": [a.ids[i] for i in att.removed_by("unexplained")],
                "unexplained_added_ids": [b.ids[j] for j in added_u],
                "attribution": att.to_dict(a, b),
                "diff_block": block,
                "added_examples": [clip_example(b.texts[j]) for j in added_u[:5]],
                "removed_examples": [clip_example(a.texts[i]) for i in att.removed_by("unexplained")[:5]],
            },
        )
    )
    report = assemble(
        findings,
        inputs={"reference": a.batch.info(), "current": b.batch.info()},
        model=b.model,
        seed=seed,
        rules=full,
        outcomes=outcomes,
    )
    return report, d


def diff(
    store: StoreLike,
    a: str,
    b: str,
    *,
    rules: str | Path | Rules | None = None,
    seed: int = 0,
    n_permutations: int | None = None,
    device: str = "auto",
    progress: Any = None,
    policy: Policy | Sequence[str] | None = None,
) -> DiffResult:
    """What stored round ``b`` changed relative to stored round ``a`` (see ``diff_report``);
    both rounds are checked against their manifests on load."""
    st = _open(store)
    ruleset = rules if isinstance(rules, Rules) else load_rules(rules)
    ref, cur = st.load(a), st.load(b)
    ca, cb = st.clusters(a), st.clusters(b)
    basis = st.basis()
    report, d = diff_report(
        ref,
        cur,
        ruleset,
        seed=seed,
        basis=basis,
        a_clusters=ca,
        b_clusters=cb,
        n_permutations=n_permutations,
        device=device,
        progress=progress,
        policy=policy,
    )
    k = len(basis) if basis is not None else int(max(ca.max(initial=0), cb.max(initial=0)) + 1)
    return DiffResult(
        report=report,
        records=d,
        reference=ref,
        current=cur,
        a_name=a,
        b_name=b,
        clusters=tuple(cluster_table(ca, cb, k)),
    )


# --------------------------------------------------------------------------------------
# trend


@dataclass(frozen=True)
class TrendResult:
    """``auditor trend``: the graded Report and the chain it tested, root first."""

    report: Report
    chain: tuple[str, ...]


TREND_POLICY_CHECKS: tuple[str, ...] = ("trend_cluster_shift", "trend_dedup_resolution")


def adjusted_chain(
    snapshots: Sequence[Snapshot], policy: Policy | None
) -> tuple[list[Snapshot], list[tuple[Snapshot, Snapshot, Any]]]:
    """The chain with every step's explained change undone, cumulatively: round t' is
    round (t-1)' less step t's unexplained removals (by content) plus its unexplained
    additions.  Returns the adjusted rounds (root unchanged) and each step's
    (A, B, Attribution).  An edited record stands for its original in later rounds only
    by content: a later unexplained removal of the edit is not seen (documented limit)."""
    adj = [snapshots[0]]
    steps = []
    cur = snapshots[0]
    for a, b in zip(snapshots[:-1], snapshots[1:], strict=True):
        att = attribute(a, b, policy)
        steps.append((a, b, att))
        gone = Counter(a.batch.hashes[i] for i in att.removed_by("unexplained"))
        keep = []
        for k, h in enumerate(cur.batch.hashes):
            if gone.get(h, 0) > 0:
                gone[h] -= 1
                continue
            keep.append(k)
        parts = [cur.subset(keep)]
        added = att.added_by("unexplained")
        if added:
            parts.append(b.subset(added))
        cur = concat(parts)
        adj.append(cur)
    return adj, steps


def trend_report(
    snapshots: Sequence[Snapshot],
    names: Sequence[str],
    *,
    seed: int,
    alpha: float = 0.01,
    warn_alpha: float = 0.05,
    n_permutations: int | None = None,
    policy: Policy | Sequence[str] | None = None,
    basis: np.ndarray | None = None,
    rules: Rules | None = None,
) -> Report:
    """The Report for a chain of rounds, conditional on the curation policy (declared,
    or inferred per step when ``policy=None``).

    The three trend tests run on the adjusted chain (``adjusted_chain``: explained
    change undone), ``trend_cluster_shift`` compares the root with the last adjusted
    round per basis cluster (a topic cut in small steps), and
    ``trend_dedup_resolution`` pools every step's duplicate groups (the kept member
    redrawn within each group).  Graded by the gate with a Bonferroni split of
    ``alpha`` across the tests.  ``n_permutations=None``: see ``permutations_for``.
    ``rules``: only its ``policy:`` is used (when ``policy`` is None).
    """
    pol = _policy_of(policy, rules)
    checks = TREND_CHECKS + TREND_POLICY_CHECKS
    rules = Rules(
        rules=tuple(
            Rule(name=c, check=c, severity="fail", why="slow drift across curation rounds") for c in checks
        ),
        alpha=alpha,
        warn_alpha=warn_alpha,
        path="<trend>",
    )
    if n_permutations is None:
        n_permutations = permutations_for(rules.fail_threshold)
    adj, steps = adjusted_chain(snapshots, pol)
    raw = trend_findings(adj, seed=seed, names=names, n_permutations=n_permutations)
    skipped: dict[str, str] = {}
    if basis is not None:
        for f in cluster_shift(adj[0], adj[-1], basis):
            raw.append(dataclasses.replace(f, check="trend_cluster_shift"))
    else:
        skipped["trend_cluster_shift"] = "no cluster basis given"
    groups = dup_groups([(a, b, att) for a, b, att in steps], projection_of(snapshots[0].embeddings), labels=names[1:])
    if len(groups.kept) >= 2:
        raw.append(dedup_resolution(groups, seed=seed, n_permutations=n_permutations, check="trend_dedup_resolution"))
    else:
        skipped["trend_dedup_resolution"] = f"{len(groups.kept)} duplicate group(s) in the chain: nothing to resolve"
    findings = grade_all(raw, rules)
    explained = Counter(r.split(":")[0] for _, _, att in steps for r in att.removed_reason)
    findings.append(
        Finding(
            check="round_records",
            side="both",
            summary="chain policy: "
            + "; ".join(f"{names[t + 1]} {att.policy.describe()}" for t, (_, _, att) in enumerate(steps))
            + f"; removed records by reason: {dict(sorted(explained.items()))}",
            details={
                "steps": [
                    {"round": names[t + 1], "policy": att.policy.to_dict(), "counts": dict(att.counts)}
                    for t, (_, _, att) in enumerate(steps)
                ],
                "adjusted_sizes": [len(s) for s in adj],
            },
        )
    )
    ran = {f.check for f in findings}
    outcomes = []
    for c in checks:
        if c in ran:
            outcomes.append(RuleOutcome(c, c, "ran"))
        else:
            outcomes.append(RuleOutcome(c, c, "skipped", skipped.get(c, "a chain of two rounds has only the root test")))
    return assemble(
        findings,
        inputs={"reference": snapshots[0].batch.info(), "current": snapshots[-1].batch.info()},
        model=snapshots[-1].model,
        seed=seed,
        rules=rules,
        outcomes=outcomes,
    )


def trend(
    store: StoreLike,
    name: str | None = None,
    *,
    seed: int = 0,
    n_permutations: int | None = None,
    policy: Policy | Sequence[str] | None = None,
    rules: str | Path | Rules | None = None,
) -> TrendResult:
    """Slow drift along the chain root -> ... -> ``name`` (default: the newest round).
    ``rules``: a rules file whose ``policy:`` applies when ``policy`` is None."""
    ruleset = None if rules is None else rules if isinstance(rules, Rules) else load_rules(rules)
    st = _open(store)
    if name is not None:
        validate_name(name)
    chain = st.chain(name)
    if len(chain) < 2:
        last = chain[-1].name if chain else "(empty store)"
        raise AuditorError(f"{st.root}: trend needs a chain of at least 2 rounds; {last} has no parent")
    snaps = [st.load(m.name) for m in chain]
    names = tuple(m.name for m in chain)
    report = trend_report(
        snaps, names, seed=seed, n_permutations=n_permutations, policy=policy, basis=st.basis(), rules=ruleset
    )
    return TrendResult(report=report, chain=names)
