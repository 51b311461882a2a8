"""report.html: one self-contained file a reviewer opens offline.

No script at all, inline CSS and inline SVG only, and a Content-Security-Policy that
forbids everything else (``default-src 'none'``), so even a mistake in escaping could
not run code or fetch anything.  The escaping is the first line of defence: every piece
of dataset text (records, ids, paths, top terms, details) goes through
``html.escape(quote=True)`` and lands only in element text or an SVG ``<title>``, never
in an attribute, a URL or the ``<style>`` block.

Contents: a 2-D PCA map of reference and current embeddings with the records of each
failing / warning finding highlighted (one overview map, plus a small map per flagged
finding, all from one projection); a bar chart of cluster shares, reference versus
current, with clusters holding at least half of a flagged finding's records marked; the
findings table; and per finding its statistics, top terms, example records, other
evidence and record ids.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from auditor.pca import pca
from auditor.report._common import (
    SEVERITY_RANK,
    clean,
    compact,
    counts,
    diff_block,
    fields_line,
    fmt_num,
    fmt_p,
    ordered_findings,
    raw_p_note,
    rows_note,
    rule_label,
    rules_line,
    rules_path,
    split_details,
    testing_note,
    truncated_ids,
    why,
)
from auditor.terms import Background, top_terms
from auditor.types import Finding, Report, Snapshot

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

_MAP_W, _MAP_H, _PAD = 860, 520, 14
_MINI_W, _MINI_H = 420, 260
_MAX_MINI_MAPS = 12
_MAX_SECTIONS = 200
_TOOLTIP_CHARS = 90
_EXAMPLE_CHARS = 400
_MAX_IDS = 50

def esc(text: object, limit: int | None = None, *, one_line: bool = False) -> str:
    """Clean (controls, bidi, length) then HTML-escape, quotes included."""
    return html.escape(clean(text, limit, one_line=one_line), quote=True)


@dataclass(frozen=True)
class _Layout:
    """Everything computed once from the embeddings and shared by all the drawings."""

    xy: np.ndarray  # (n, 2) map coordinates in pixels of the big map, all records
    shown: np.ndarray  # indices drawn on the maps (subsample, flagged records included)
    side: np.ndarray  # 0 = reference, 1 = current, per record
    ids: list[str]
    texts: Sequence[str]
    flag: np.ndarray  # 0 none, 1 warn, 2 fail: the worst flagged finding a record is in
    var: tuple[float, float]  # share of variance on the two axes


def render_html(
    report: Report,
    ref: Snapshot,
    cur: Snapshot,
    *,
    max_points: int = 4000,
    n_clusters: int | None = None,
) -> str:
    """Render the report as a self-contained HTML page (no script, no network)."""
    findings = ordered_findings(report)
    numbered = list(enumerate(findings, 1))
    member = _finding_members(findings, ref, cur)
    layout = _layout(ref, cur, findings, member, max_points=max_points, seed=report.seed)
    # labels: words typical of a group against the drawn records as background
    background = Background.of(layout.texts, layout.shown)

    n = counts(report)
    status = report.status
    body: list[str] = [
        f'<header class="st-{esc(status)}"><h1>auditor report: <span class="badge">{esc(status.upper())}</span></h1>',
        f"<p>{n['fail']} failing \u00b7 {n['warn']} warning \u00b7 {n['info']} info finding(s)</p>",
        _inputs_html(report),
        "</header>",
        diff_block_html(report),
        '<nav><a href="#map">Map</a> <a href="#clusters">Clusters</a> <a href="#findings">Findings</a></nav>',
        '<section id="map"><h2>Embedding map (PCA)</h2>',
        _map_legend(layout),
        _map_svg(layout, _MAP_W, _MAP_H, highlight=None, titles=True),
        "</section>",
        '<section id="clusters"><h2>Cluster shares, reference vs current</h2>',
        _finding_clusters_html(numbered),
        _clusters_html(layout, ref, cur, numbered, member, background, n_clusters, report.seed),
        "</section>",
        '<section id="findings"><h2>Findings</h2>',
        f'<p class="note">{esc(testing_note(report))}</p>',
        _findings_table(numbered),
        "</section>",
    ]
    minis = 0
    for i, f in numbered[:_MAX_SECTIONS]:
        with_map = f.severity in ("fail", "warn") and minis < _MAX_MINI_MAPS
        minis += with_map
        body.append(_finding_section(i, f, layout, member[i - 1], background, with_map))
    if len(numbered) > _MAX_SECTIONS:
        body.append(f'<p class="note">{len(numbered) - _MAX_SECTIONS} more finding(s) in report.json.</p>')
    body.append(
        f"<footer>auditor report schema {int(report.schema_version)} \u00b7 seed {int(report.seed)} "
        f"\u00b7 map: PCA of all {len(layout.side)} records, {len(layout.shown)} drawn</footer>"
    )
    return _page(f"auditor report: {status.upper()}", "\n".join(body))


# --- page frame --------------------------------------------------------------------------

_CSS = """
:root{--ref:#9aa0a6;--cur:#1a73e8;--warn:#e37400;--fail:#d93025;--ink:#202124;--mute:#5f6368}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);margin:0 auto;
max-width:1180px;padding:16px 24px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dadce0}
h3{font-size:15px;margin:0 0 6px}
header{padding:12px 16px;border-radius:6px;border-left:8px solid var(--mute);background:#f8f9fa}
header.st-fail{border-color:var(--fail)}header.st-warn{border-color:var(--warn)}header.st-pass{border-color:#188038}
.badge{padding:1px 8px;border-radius:4px;color:#fff;background:var(--mute)}
.st-fail .badge{background:var(--fail)}.st-warn .badge{background:var(--warn)}.st-pass .badge{background:#188038}
nav a{margin-right:12px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e8eaed;padding:4px 6px;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td{overflow-wrap:break-word}td.wrap{overflow-wrap:anywhere}td.nw{white-space:nowrap}
.sev{font-weight:600;text-transform:uppercase;white-space:nowrap}
.sev-fail{color:var(--fail)}.sev-warn{color:var(--warn)}.sev-info{color:var(--mute)}
.note{color:var(--mute);font-size:13px}
.finding{border:1px solid #dadce0;border-left:6px solid var(--mute);border-radius:6px;padding:10px 14px;margin:14px 0}
.finding.fail{border-left-color:var(--fail)}.finding.warn{border-left-color:var(--warn)}
.finding dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:6px 0}
.finding dt{color:var(--mute)}.finding dd{margin:0;overflow-wrap:anywhere}
.terms span{display:inline-block;background:#e8f0fe;border-radius:10px;padding:0 8px;margin:2px 4px 2px 0}
pre.ex{white-space:pre-wrap;overflow-wrap:anywhere;background:#f8f9fa;border-left:3px solid #dadce0;
padding:6px 10px;margin:4px 0 8px;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
.ids{font:12px ui-monospace,Menlo,Consolas,monospace;color:var(--mute);overflow-wrap:anywhere}
svg{display:block;max-width:100%;height:auto;background:#fff;border:1px solid #e8eaed;border-radius:4px}
svg text{font:11px system-ui,sans-serif;fill:var(--ink)}
.p-ref{fill:var(--ref);fill-opacity:.45}.p-cur{fill:var(--cur);fill-opacity:.45}
.p-warn{fill:var(--warn);stroke:#fff;stroke-width:.6}.p-fail{fill:var(--fail);stroke:#fff;stroke-width:.6}
.p-bg{fill:#bdc1c6;fill-opacity:.35}
.b-ref{fill:var(--ref)}.b-cur{fill:var(--cur)}.b-flag-fail{fill:var(--fail)}.b-flag-warn{fill:var(--warn)}
svg text.flag-fail{fill:var(--fail);font-weight:600}svg text.flag-warn{fill:var(--warn);font-weight:600}
.legend span{margin-right:14px;white-space:nowrap}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px;vertical-align:-1px}
.d-ref{background:var(--ref)}.d-cur{background:var(--cur)}.d-warn{background:var(--warn)}.d-fail{background:var(--fail)}
.cols{display:flex;gap:16px;flex-wrap:wrap}.cols>div{flex:1 1 420px;min-width:0}
footer{margin-top:32px;color:var(--mute);font-size:12px}
"""


def diff_block_html(report: Report) -> str:
    """A round diff: the counts, then the unexplained change, before anything else."""
    block = diff_block(report)
    if block is None:
        return ""
    rows = "".join(
        f'<tr><td>{esc(label)}</td><td class="num">{int(n)}</td></tr>' for label, n in block.get("rows", [])
    )
    items = "".join(
        f"<li>{_sev(str(u['severity']))} {esc(u['rule'] or u['check'])} (p={esc(fmt_p(u['p_value']))}): "
        f"{esc(u['summary'], 300)}</li>"
        for u in block.get("unexplained", [])
    )
    change = f"<h3>Unexplained change</h3><ul>{items}</ul>" if items else "<p>No unexplained change.</p>"
    policy = esc(str(block.get("policy", "")), 300)
    return (
        f'<section id="diff"><h2>What this round changed</h2><p class="note">Policy: {policy}</p>'
        f"<table><tbody>{rows}</tbody></table>{change}</section>"
    )


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _inputs_html(report: Report) -> str:
    rows = []
    for name in sorted(report.inputs, key=lambda k: (k != "reference", k != "current", k)):
        info = report.inputs[name]
        rows.append(
            f"<tr><th>{esc(name)}</th><td>{esc(info.path, 300)}</td>"
            f'<td class="num">{int(info.n_records)} records</td><td class="ids">sha256 {esc(info.sha256[:16])}</td></tr>'
        )
    rows.append(
        f"<tr><th>model</th><td>{esc(report.model.name, 200)}</td><td></td>"
        f'<td class="ids">sha256 {esc(report.model.sha256[:16])}</td></tr>'
    )
    extra = f" \u00b7 rules {esc(rules_path(report), 300)}" if rules_path(report) else ""
    return (
        f'<table class="inputs">{"".join(rows)}</table><p class="note">seed {int(report.seed)}{extra}</p>'
        f'<p class="note">embedded fields: {esc(fields_line(report), 400)}</p>'
        f'<p class="note">{esc(rules_line(report), 600)}</p>'
    )


# --- geometry ---------------------------------------------------------------------------


def _finding_members(findings: Sequence[Finding], ref: Snapshot, cur: Snapshot) -> list[np.ndarray]:
    """Global record indices (reference first, then current) of each finding's records."""
    pos = {
        "reference": {rid: i for i, rid in enumerate(ref.ids)},
        "current": {rid: len(ref) + i for i, rid in enumerate(cur.ids)},
    }
    out = []
    for f in findings:
        table = pos.get(f.side, {})  # "both": a gate note, no records to place
        out.append(np.array([table[r] for r in f.record_ids if r in table], dtype=np.int64))
    return out


def _layout(
    ref: Snapshot,
    cur: Snapshot,
    findings: Sequence[Finding],
    member: Sequence[np.ndarray],
    *,
    max_points: int,
    seed: int,
) -> _Layout:
    n_ref, n = len(ref), len(ref) + len(cur)
    side = np.r_[np.zeros(n_ref, dtype=np.int8), np.ones(len(cur), dtype=np.int8)]
    flag = np.zeros(n, dtype=np.int8)
    for f, idx in zip(findings, member):
        if f.severity in ("fail", "warn") and idx.size:
            level = 2 if f.severity == "fail" else 1
            flag[idx] = np.maximum(flag[idx], level)
    rng = np.random.default_rng(seed)
    if n == 0:
        coords, var = np.zeros((0, 2)), (0.0, 0.0)
    else:
        proj = pca(np.concatenate([ref.embeddings, cur.embeddings]), 2, fit_rows=10000, rng=rng)
        coords, var = proj.coords.astype(np.float64), (float(proj.explained[0]), float(proj.explained[1]))

    flagged = np.flatnonzero(flag)
    if flagged.size > max_points // 2:
        flagged = np.sort(rng.choice(flagged, size=max_points // 2, replace=False))
    rest = np.flatnonzero(flag == 0)
    room = max(0, max_points - flagged.size)
    if rest.size > room:
        rest = np.sort(rng.choice(rest, size=room, replace=False))
    shown = np.sort(np.r_[flagged, rest]).astype(np.int64)

    # scale to the big map's pixel box from the drawn points' range
    xy = np.zeros((n, 2))
    if shown.size:
        lo, hi = coords[shown].min(axis=0), coords[shown].max(axis=0)
        span = np.maximum(hi - lo, 1e-12)
        unit = (coords - lo) / span
        xy[:, 0] = _PAD + unit[:, 0] * (_MAP_W - 2 * _PAD)
        xy[:, 1] = _MAP_H - _PAD - unit[:, 1] * (_MAP_H - 2 * _PAD)
    return _Layout(
        xy=xy,
        shown=shown,
        side=side,
        ids=list(ref.ids) + list(cur.ids),
        texts=list(ref.texts) + list(cur.texts),
        flag=flag,
        var=var,
    )


def _map_legend(layout: _Layout) -> str:
    n_ref = int(np.count_nonzero(layout.side == 0))
    n_cur = int(layout.side.size - n_ref)
    drawn = layout.shown
    return (
        '<p class="legend">'
        f'<span><i class="dot d-ref"></i>reference ({n_ref})</span>'
        f'<span><i class="dot d-cur"></i>current ({n_cur})</span>'
        f'<span><i class="dot d-warn"></i>in a warning finding ({int(np.count_nonzero(layout.flag == 1))})</span>'
        f'<span><i class="dot d-fail"></i>in a failing finding ({int(np.count_nonzero(layout.flag == 2))})</span>'
        f"<span>axes: PC1 {100 * layout.var[0]:.1f}%, PC2 {100 * layout.var[1]:.1f}% of variance; "
        f"{drawn.size} of {layout.side.size} records drawn; hover a point for its record</span></p>"
    )


def _tooltip(layout: _Layout, i: int) -> str:
    side = "current" if layout.side[i] else "reference"
    return (
        f"<title>{side} {esc(layout.ids[i], 60, one_line=True)}: "
        f"{esc(layout.texts[i], _TOOLTIP_CHARS, one_line=True)}</title>"
    )


def _map_svg(
    layout: _Layout, w: int, h: int, *, highlight: np.ndarray | None, titles: bool, hl_class: str = "p-fail"
) -> str:
    """The PCA map.  ``highlight`` None: the overview (all flagged records coloured);
    otherwise a small map with only those records coloured over a grey background."""
    if layout.shown.size < 2:
        return '<p class="note">Too few records to draw a map.</p>'
    sx, sy = w / _MAP_W, h / _MAP_H
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">'
    ]

    def dot(i: int, cls: str, r: float, title: bool) -> str:
        x, y = layout.xy[i, 0] * sx, layout.xy[i, 1] * sy
        if title:
            return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" class="{cls}">{_tooltip(layout, i)}</circle>'
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" class="{cls}"/>'

    if highlight is None:
        shown = layout.shown
        # draw order: reference, current, then flagged on top (fail last, most visible)
        for group, cls, r in (
            (shown[(layout.flag[shown] == 0) & (layout.side[shown] == 0)], "p-ref", 2.2),
            (shown[(layout.flag[shown] == 0) & (layout.side[shown] == 1)], "p-cur", 2.2),
            (shown[layout.flag[shown] == 1], "p-warn", 3.4),
            (shown[layout.flag[shown] == 2], "p-fail", 3.4),
        ):
            parts.extend(dot(int(i), cls, r, titles) for i in group)
    else:
        background = layout.shown[:: max(1, layout.shown.size // 600)]
        parts.extend(dot(int(i), "p-bg", 1.6, False) for i in background)
        hl = highlight[:1000]
        parts.extend(dot(int(i), hl_class, 2.6, titles) for i in hl)
    parts.append("</svg>")
    return "".join(parts)


# --- clusters ---------------------------------------------------------------------------


def _clusters_html(
    layout: _Layout,
    ref: Snapshot,
    cur: Snapshot,
    numbered: Sequence[tuple[int, Finding]],
    member: Sequence[np.ndarray],
    background: Background,
    n_clusters: int | None,
    seed: int,
) -> str:
    n_ref, n_cur = len(ref), len(cur)
    n = n_ref + n_cur
    if n_ref == 0 or n_cur == 0:
        return '<p class="note">Both inputs need records to compare cluster shares.</p>'
    from auditor.index import kmeans  # faiss is heavy; only the HTML report needs it

    k = n_clusters or int(min(12, max(2, n // 100)))
    _, assign = kmeans(np.concatenate([ref.embeddings, cur.embeddings]), k, seed=seed)
    k = int(assign.max()) + 1
    ref_share = np.bincount(assign[:n_ref], minlength=k) / n_ref
    cur_share = np.bincount(assign[n_ref:], minlength=k) / n_cur

    # a cluster is marked for a flagged finding when it holds >= half of its records
    marks: dict[int, list[tuple[int, str]]] = {}
    for (i, f), idx in zip(numbered, member):
        if f.severity not in ("fail", "warn") or idx.size == 0:
            continue
        per = np.bincount(assign[idx], minlength=k)
        for big in np.flatnonzero(per * 2 >= idx.size):
            marks.setdefault(int(big), []).append((i, f.severity))

    shown = layout.shown
    order = sorted(range(k), key=lambda c: (-(cur_share[c] - ref_share[c]), c))
    row_h, label_w, bar_w = 34, 300, 420
    h = 26 + row_h * k
    w = label_w + bar_w + 140
    top = max(float(ref_share.max()), float(cur_share.max()), 1e-9)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">',
        f'<rect x="{label_w}" y="6" width="10" height="10" class="b-ref"/>'
        f'<text x="{label_w + 14}" y="15">reference share</text>'
        f'<rect x="{label_w + 130}" y="6" width="10" height="10" class="b-cur"/>'
        f'<text x="{label_w + 144}" y="15">current share</text>',
    ]
    for row, c in enumerate(order):
        y = 26 + row * row_h
        in_c = shown[assign[shown] == c]
        terms = top_terms((layout.texts[int(i)] for i in in_c), background, k, k=3)
        label = f"cluster {c}: " + (", ".join(terms) if terms else "-")
        parts.append(
            f'<text x="4" y="{y + 14}">{esc(label, 44, one_line=True)}<title>{esc(label)}</title></text>'
        )
        if c in marks:
            sev = "fail" if any(s == "fail" for _, s in marks[c]) else "warn"
            nums = ", ".join(f"#{i}" for i, _ in marks[c][:4]) + (" ..." if len(marks[c]) > 4 else "")
            parts.append(
                f'<rect x="0" y="{y}" width="3" height="{row_h - 6}" class="b-flag-{sev}"/>'
                f'<text x="4" y="{y + 27}" class="flag-{sev}">\u25b2 finding {nums}</text>'
            )
        for j, (share, cls) in enumerate(((ref_share[c], "b-ref"), (cur_share[c], "b-cur"))):
            by = y + 2 + j * 13
            bw = bar_w * share / top
            parts.append(
                f'<rect x="{label_w}" y="{by}" width="{bw:.1f}" height="11" class="{cls}"/>'
                f'<text x="{label_w + bw + 4:.1f}" y="{by + 10}">{100 * share:.1f}%</text>'
            )
    parts.append("</svg>")
    return (
        f'<p class="note">k-means (k={k}, seed {int(seed)}) on the embeddings of both inputs; '
        "clusters sorted by current minus reference share; labels are words typical of each cluster; "
        "\u25b2 marks a cluster holding at least half of a flagged finding's records.</p>" + "".join(parts)
    )


def _finding_clusters_html(numbered: Sequence[tuple[int, Finding]]) -> str:
    """The clusters the topic findings name, with the shares their check measured
    (``share_reference`` / ``share_current`` in details): drawn as given, nothing recomputed,
    so every over- and under-selected finding has its bar pair here."""
    rows = []
    for i, f in numbered:
        d = f.details
        ref_s, cur_s = d.get("share_reference"), d.get("share_current")
        if not isinstance(ref_s, (int, float)) or not isinstance(cur_s, (int, float)):
            continue
        terms, _, _ = split_details(d)
        rows.append((i, f, float(ref_s), float(cur_s), ", ".join(t.split(" (")[0] for t in terms[:3])))
    if not rows:
        return ""
    row_h, label_w, bar_w = 34, 330, 400
    h, w = 26 + row_h * len(rows), label_w + bar_w + 90
    top = max(max(r, c) for _, _, r, c, _ in rows) or 1e-9
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">',
        f'<rect x="{label_w}" y="6" width="10" height="10" class="b-ref"/><text x="{label_w + 14}" y="15">reference share</text>'
        f'<rect x="{label_w + 130}" y="6" width="10" height="10" class="b-cur"/><text x="{label_w + 144}" y="15">current share</text>',
    ]
    for row, (i, f, ref_s, cur_s, label_terms) in enumerate(rows):
        y = 26 + row * row_h
        sev = f.severity if f.severity in ("fail", "warn") else "info"
        direction = str(f.details.get("direction", ""))
        label = f"#{i} {direction} cluster: {label_terms or '-'}"
        cls = f' class="flag-{sev}"' if sev != "info" else ""
        parts.append(f'<text x="4" y="{y + 14}"{cls}>{esc(label, 52, one_line=True)}<title>{esc(label)}</title></text>')
        for j, (share, bcls) in enumerate(((ref_s, "b-ref"), (cur_s, "b-cur"))):
            by, bw = y + 2 + j * 13, bar_w * share / top
            parts.append(
                f'<rect x="{label_w}" y="{by}" width="{bw:.1f}" height="11" class="{bcls}"/>'
                f'<text x="{label_w + bw + 4:.1f}" y="{by + 10}">{100 * share:.1f}%</text>'
            )
    parts.append("</svg>")
    return (
        '<h3>The clusters the findings name</h3><p class="note">Each topic finding\'s own cluster, with the '
        "reference and current shares its check measured (numbers match the finding).</p>"
        + "".join(parts)
        + '<h3>Overview</h3><p class="note">A coarser clustering of everything, for orientation only: '
        "its clusters are not the findings' clusters.</p>"
    )


# --- findings ---------------------------------------------------------------------------


def _sev(severity: str) -> str:
    s = severity if severity in SEVERITY_RANK else "info"
    return f'<span class="sev sev-{s}">{esc(s)}</span>'


def _findings_table(numbered: Sequence[tuple[int, Finding]]) -> str:
    if not numbered:
        return "<p>No findings.</p>"
    head = (
        "<tr><th>#</th><th>Severity</th><th>Rule / check</th><th>Side</th><th>Summary</th>"
        '<th class="num">Statistic</th><th class="num">p-value</th><th class="num">Effect</th>'
        '<th class="num">Records</th></tr>'
    )
    rows = []
    for i, f in numbered:
        link = f'<a href="#finding-{i}">{i}</a>' if i <= _MAX_SECTIONS else str(i)
        rows.append(
            f"<tr><td>{link}</td><td>{_sev(f.severity)}</td><td>{esc(rule_label(f), 120)}</td>"
            f'<td class="nw">{esc(f.side)}</td><td class="wrap">{esc(f.summary, 400)}</td>'
            f'<td class="num">{fmt_num(f.statistic)}</td><td class="num">{fmt_p(f.p_value)}</td>'
            f'<td class="num">{fmt_num(f.effect_size)}</td><td class="num">{len(f.record_ids)}</td></tr>'
        )
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _finding_section(
    i: int, f: Finding, layout: _Layout, idx: np.ndarray, background: Background, with_map: bool
) -> str:
    sev = f.severity if f.severity in SEVERITY_RANK else "info"
    terms, examples, evidence = split_details(f.details)
    term_note = ""
    if not terms and idx.size:
        # no terms from the check: words typical of its records against the drawn sample
        group = idx[:2000]
        # as many groups of this size as the background holds share its words
        n_groups = max(1, round(layout.shown.size / group.size))
        terms = top_terms((layout.texts[int(j)] for j in group), background, n_groups, k=8)
        term_note = ' <span class="note">(computed for this report)</span>'
    if not examples:
        examples = [(layout.ids[int(j)], layout.texts[int(j)]) for j in idx[:3]]

    raw = raw_p_note(f)
    out = [
        f'<section class="finding {sev}" id="finding-{i}">',
        f"<h3>#{i} {_sev(sev)} {esc(rule_label(f), 120)}</h3>",
        f"<p>{esc(f.summary, 1000)}</p>",
        *([f'<p class="note">{esc(why(f))}</p>'] if why(f) else []),
        "<dl>",
        f"<dt>check</dt><dd>{esc(f.check)}</dd><dt>rule</dt><dd>{esc(f.rule or f.check)}</dd>",
        f"<dt>side</dt><dd>{esc(f.side)}</dd>",
        f"<dt>statistic</dt><dd>{fmt_num(f.statistic)}</dd>",
        f"<dt>p-value</dt><dd>{fmt_p(f.p_value)}{raw}</dd>",
        f"<dt>effect size</dt><dd>{fmt_num(f.effect_size)}</dd>",
        f"<dt>records</dt><dd>{len(f.record_ids)} ({idx.size} found in the {esc(f.side)} input)</dd>",
    ]
    for key in list(evidence)[:20]:
        out.append(f"<dt>{esc(key, 60)}</dt><dd>{esc(compact(evidence[key], 600))}</dd>")
    out.append("</dl>")

    left = []
    if terms:
        spans = "".join(f"<span>{esc(t, 60, one_line=True)}</span>" for t in terms[:15])
        left.append(f'<h4>Top terms{term_note}</h4><p class="terms">{spans}</p>')
    if examples:
        left.append("<h4>Example records</h4>")
        for rid, text in examples[:3]:
            if rid is not None:
                left.append(f'<div class="ids">{esc(rid, 120, one_line=True)}</div>')
            left.append(f'<pre class="ex">{esc(text, _EXAMPLE_CHARS)}</pre>')
    ids, more = truncated_ids(f.record_ids, _MAX_IDS)
    if ids:
        tail = f" ... and {more} more" if more else ""
        left.append(f'<h4>Record ids</h4><p class="ids">{esc(", ".join(ids))}{esc(tail)}</p>')
        if rows_note(f):
            left.append(f'<p class="ids">where in the {esc(f.side)} input: {esc(rows_note(f, _MAX_IDS))}</p>')

    if with_map and idx.size:
        mini = _map_svg(layout, _MINI_W, _MINI_H, highlight=idx, titles=True, hl_class=f"p-{sev}")
        out.append(
            f'<div class="cols"><div>{"".join(left)}</div><div><h4>Its records on the map</h4>{mini}</div></div>'
        )
    else:
        out.extend(left)
    out.append("</section>")
    return "\n".join(out)


# --- notebook summary -------------------------------------------------------------------


def render_summary(report: Report, *, max_rows: int = 30) -> str:
    """A compact HTML fragment for ``Report._repr_html_`` in notebooks: verdict, inputs
    and the findings table.  No embeddings needed; the same escaping as the full page."""
    n = counts(report)
    numbered = list(enumerate(ordered_findings(report), 1))
    colour = {"fail": "#d93025", "warn": "#e37400", "pass": "#188038"}.get(report.status, "#5f6368")
    rows = []
    for i, f in numbered[:max_rows]:
        rows.append(
            f"<tr><td>{i}</td><td><b>{esc(f.severity.upper())}</b></td><td>{esc(rule_label(f), 80)}</td>"
            f"<td>{esc(f.side)}</td><td style='text-align:left'>{esc(f.summary, 300, one_line=True)}</td>"
            f"<td>{fmt_p(f.p_value)}</td><td>{len(f.record_ids)}</td></tr>"
        )
    more = (
        f"<p>{len(numbered) - max_rows} more finding(s): report.to_pandas()</p>" if len(numbered) > max_rows else ""
    )
    table = (
        "<table><thead><tr><th>#</th><th>severity</th><th>rule / check</th><th>side</th><th>summary</th>"
        f"<th>p-value</th><th>records</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        if rows
        else "<p>No findings.</p>"
    )
    inputs = "; ".join(
        f"{esc(name)}: {esc(info.path, 120, one_line=True)} ({int(info.n_records)} records, "
        f"fields {esc(', '.join(info.text_fields) or '-', 120)})"
        for name, info in sorted(report.inputs.items(), key=lambda kv: kv[0] != "reference")
    )
    return (
        f"<div><p><span style='background:{colour};color:#fff;padding:1px 8px;border-radius:4px'>"
        f"{esc(report.status.upper())}</span> {n['fail']} failing \u00b7 {n['warn']} warning \u00b7 "
        f"{n['info']} info finding(s) \u00b7 model {esc(report.model.name, 80)} \u00b7 seed {int(report.seed)}</p>"
        f"<p style='font-size:90%'>{inputs}</p>{table}{more}"
        "<p style='font-size:90%'>report.to_pandas(): one row per finding; report.records(): one row per "
        "flagged record; report.save(dir): the CLI's files.</p></div>"
    )
