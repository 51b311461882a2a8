"""Curation operations: the library behind ``auditor snapshot``, ``history``, ``diff`` and
``trend`` (one call per command; cli.py only parses, calls and renders).

The statistics live in ``auditor/rounds.py``; grading reuses the gate
(``auditor/gate.py``: ``plan``, ``run_rules``, ``grade``, ``assemble``), so a diff or a
trend is judged exactly as an audit is; the diff's Markdown is ``auditor/report/rounds.py``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditor.gate import assemble, grade, grade_all, plan, run_rules
from auditor.rounds import (
    DIFF_CHECKS,
    TREND_CHECKS,
    RecordDiff,
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
) -> tuple[Report, RecordDiff]:
    """The Report of round B against round A.

    - the rules' checks (global drift, the targeted-selection checks, ...) with round A
      as reference and **B's added records** as current: under the membership null the
      added records are exchangeable with A's, so those two-sample tests are exact, and
      they are not diluted by the records B kept (comparing A with all of B is valid but
      nearly powerless when most records are shared).  Skipped when nothing was added;
    - ``round_drift`` and ``cluster_shift`` on A and B, which account for the overlap and
      also see what was removed;
    - an info finding ``round_records`` listing what was added (record_ids) and removed.

    All findings are graded by the gate, the Bonferroni split counting the rules plus
    ``round_drift`` and ``cluster_shift``.  ``n_permutations=None`` picks enough for the
    smallest reachable p-value to sit well below the gate's threshold.
    """
    full, extra = _extra_rules(rules, DIFF_CHECKS, "curation-round test (auditor/rounds.py)")
    if n_permutations is None:
        n_permutations = permutations_for(full.fail_threshold)
    d = diff_records(a, b)
    findings: list[Finding] = []
    outcomes: list[RuleOutcome] = []
    if d.added:
        added = b.subset(d.added)
        planned = plan(a, added, rules)
        raw = run_rules(a, added, rules, seed=seed, device=device, outcomes=planned, progress=progress)
        # graded against the full rule set: the Bonferroni denominator counts the round tests
        findings.extend(grade_all(raw, full))
        outcomes.extend(planned)
    else:
        outcomes.extend(
            RuleOutcome(
                r.name,
                r.check,
                "skipped",
                "nothing was added: the rules compare round A with B's added records",
            )
            for r in rules.rules
        )
    findings.append(
        grade(round_drift(a, b, seed=seed, n_permutations=n_permutations), extra["round_drift"], full)
    )
    outcomes.append(RuleOutcome(extra["round_drift"].name, "round_drift", "ran"))
    shift = extra["cluster_shift"]
    if basis is not None or (a_clusters is not None and b_clusters is not None):
        shifted = cluster_shift(a, b, basis, a_clusters=a_clusters, b_clusters=b_clusters)
        findings.extend(grade(f, shift, full) for f in shifted)
        outcomes.append(RuleOutcome(shift.name, "cluster_shift", "ran"))
    else:
        outcomes.append(RuleOutcome(shift.name, "cluster_shift", "skipped", "no cluster basis given"))
    findings.append(
        Finding(
            check="round_records",
            summary=f"{len(d.added)} records added, {len(d.removed)} removed, {len(d.kept_a)} kept "
            f"({d.reided} kept records changed id)",
            side="current",
            record_ids=tuple(b.ids[j] for j in d.added),
            details={
                **d.to_dict(),
                "rules_compared": "reference round vs the current round's added records"
                if d.added
                else "nothing added: only round_drift and cluster_shift apply",
                "removed_ids": [a.ids[i] for i in d.removed],
                "added_examples": [clip_example(b.texts[j]) for j in d.added[:5]],
                "removed_examples": [clip_example(a.texts[i]) for i in d.removed[:5]],
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


def trend_report(
    snapshots: Sequence[Snapshot],
    names: Sequence[str],
    *,
    seed: int,
    alpha: float = 0.01,
    warn_alpha: float = 0.05,
    n_permutations: int | None = None,
) -> Report:
    """The Report for a chain of rounds: the three trend tests graded by the gate with a
    Bonferroni split of ``alpha`` across them (fail when p < alpha/3).
    ``n_permutations=None``: see ``permutations_for``."""
    rules = Rules(
        rules=tuple(
            Rule(name=c, check=c, severity="fail", why="slow drift across curation rounds")
            for c in TREND_CHECKS
        ),
        alpha=alpha,
        warn_alpha=warn_alpha,
        path="<trend>",
    )
    if n_permutations is None:
        n_permutations = permutations_for(rules.fail_threshold)
    findings = grade_all(
        trend_findings(snapshots, seed=seed, names=names, n_permutations=n_permutations), rules
    )
    ran = {f.check for f in findings}
    outcomes = [
        RuleOutcome(c, c, "ran")
        if c in ran
        else RuleOutcome(c, c, "skipped", "a chain of two rounds has only the root test")
        for c in TREND_CHECKS
    ]
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
) -> TrendResult:
    """Slow drift along the chain root -> ... -> ``name`` (default: the newest round)."""
    st = _open(store)
    if name is not None:
        validate_name(name)
    chain = st.chain(name)
    if len(chain) < 2:
        last = chain[-1].name if chain else "(empty store)"
        raise AuditorError(f"{st.root}: trend needs a chain of at least 2 rounds; {last} has no parent")
    snaps = [st.load(m.name) for m in chain]
    names = tuple(m.name for m in chain)
    report = trend_report(snaps, names, seed=seed, n_permutations=n_permutations)
    return TrendResult(report=report, chain=names)
