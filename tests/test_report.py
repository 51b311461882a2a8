"""Report renderers: JSON round trip, atomic writes, markdown (PR comment), JUnit XML,
HTML (string-level escaping checks; the browser test is in test_browser.py) and the
terminal table.  The data is adversarial: records carry HTML, markdown and control
characters, and the tests check each renderer neutralises them."""

from __future__ import annotations

import io
import json
import os
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from auditor.report import json as report_json
from auditor.report import (
    render_html,
    render_junit,
    render_markdown,
    render_terminal,
    to_json,
    write_reports,
    write_text_atomic,
)
from auditor.textutil import batch_from_texts
from auditor.types import Finding, InputInfo, ModelInfo, Report, Snapshot
from tests.fakes import fake_snapshot

P_SCRIPT = "<script>window.__pwned=1;document.title='PWNED'</script>"
P_IMG = "<img src=x onerror=\"document.title='PWNED'\">"
P_JS = '<a href="javascript:alert(1)">click</a>'
P_STYLE = "</style><script>document.title='PWNED'</script>"
P_SVG = '"><svg onload="document.title=\'PWNED\'">'
HTML_PAYLOADS = (P_SCRIPT, P_IMG, P_JS, P_STYLE, P_SVG)
# markdown-only tricks: a link, an image, a table break, a code span, a mention
MD_PAYLOADS = (
    "[click](javascript:alert(1))",
    "![x](https://evil.example/x.png)",
    "a | b | c",
    "`x`",
    "@octocat",
)
CONTROL = "\x1b[31mred\x1b[0m\x00\x07\x0b\ufffe"

_WORDS = "apple banana cherry delta engine forest garden harbor island jungle kettle lemon".split()


def adversarial_inputs(
    n_ref: int = 300, n_plain: int = 240, n_adv: int = 60
) -> tuple[Snapshot, Snapshot, list[str]]:
    """Reference and current snapshots (fake encoder); the last ``n_adv`` current records
    carry the payloads and share words, so they form their own region of the map."""
    rng = np.random.default_rng(7)
    ref_texts = [" ".join(rng.choice(_WORDS, 8)) for _ in range(n_ref)]
    payloads = HTML_PAYLOADS + MD_PAYLOADS
    adv = [
        f"zebra trigger quartz {payloads[i % len(payloads)]} {CONTROL if i % 7 == 0 else ''} {i}"
        for i in range(n_adv)
    ]
    cur_texts = [" ".join(rng.choice(_WORDS, 8)) for _ in range(n_plain)] + adv
    cur_ids = [f"cur-{i:04d}" for i in range(n_plain)] + [
        f"adv{i}{HTML_PAYLOADS[i % 5]}" for i in range(n_adv)
    ]
    ref = fake_snapshot(batch_from_texts(ref_texts, path="data/reference.jsonl"))
    cur = fake_snapshot(batch_from_texts(cur_texts, cur_ids, path=f"data/{P_SCRIPT}.jsonl"))
    return ref, cur, adv


def adversarial_report(ref: Snapshot, cur: Snapshot, adv: list[str]) -> Report:
    n_plain = len(cur) - len(adv)
    findings = [
        Finding(
            check="cluster_enrichment",
            rule="clusters",
            severity="fail",
            summary=f"cluster over-represented in current: {P_IMG} {MD_PAYLOADS[0]}",
            side="current",
            record_ids=cur.ids[n_plain:],
            statistic=5.25,
            p_value=2.5e-7,
            effect_size=0.2,
            details={
                "p_raw": 1e-8,
                "counts": {"current": len(adv), "reference": 0, "note": P_SVG},
                "top_terms": [["zebra", 4.1], [P_SCRIPT, 2.0], ["@octocat", 1.0]],
                "examples": [{"id": cur.ids[n_plain + i], "text": adv[i]} for i in range(5)],
            },
        ),
        Finding(
            check="drift",
            rule="drift",
            severity="warn",
            summary=f"mean embedding shifted {P_STYLE} {CONTROL} " + " ".join(MD_PAYLOADS),
            side="current",
            record_ids=cur.ids[:20],
            statistic=0.12,
            p_value=0.002,
            details={"examples": [P_JS, "line one\n# heading?\n- item\n1. num\n> quote"]},
        ),
        Finding(
            check="duplicates",
            rule="duplicates",
            summary="no unusual duplication",
            side="reference",
            record_ids=ref.ids[:3],
            p_value=0.6,
        ),
    ]
    return Report(
        status="fail",
        inputs={"reference": ref.batch.info(), "current": cur.batch.info()},
        model=cur.model,
        seed=3,
        findings=findings,
        rules={
            "alpha": 0.01,
            "warn_alpha": 0.05,
            "n_rules": 4,
            "path": "rules/default.yaml",
            "names": ["clusters", "drift", "duplicates", "labels"],
        },
    )


@pytest.fixture(scope="module")
def case() -> tuple[Snapshot, Snapshot, Report]:
    ref, cur, adv = adversarial_inputs()
    return ref, cur, adversarial_report(ref, cur, adv)


@pytest.fixture(scope="module")
def page(case) -> str:
    ref, cur, report = case
    return render_html(report, ref, cur)


def _many_findings(n: int) -> Report:
    sev = ["fail", "warn"] + ["info"] * 8
    findings = [
        Finding(
            check=f"check_{i % 7}",
            rule=f"rule_{i % 7}",
            severity=sev[i % 10],  # type: ignore[arg-type]
            summary=f"finding {i} " + "x" * 150 + " | <b>",
            side="current",
            record_ids=tuple(f"id-{i}-{j}" for j in range(200)),
            statistic=float(i),
            p_value=1.0 / (i + 2),
            details={"examples": ["some example text " * 30] * 5, "top_terms": ["alpha", "beta"] * 10},
        )
        for i in range(n)
    ]
    info = InputInfo(path="x.jsonl", n_records=1000, sha256="0" * 64)
    return Report(
        status="fail",
        inputs={"reference": info, "current": info},
        model=ModelInfo("m", "f" * 64, 8),
        seed=0,
        findings=findings,
    )


# --- JSON -------------------------------------------------------------------------------


def test_json_round_trip_and_stable(case):
    _, _, report = case
    text = to_json(report)
    back = Report.from_dict(json.loads(text))
    assert back.to_dict() == report.to_dict()
    assert to_json(back) == text  # byte-stable through a round trip
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def test_write_reports_writes_all_and_leaves_no_temp_files(case, tmp_path):
    ref, cur, report = case
    paths = write_reports(report, tmp_path / "out", ref=ref, cur=cur, html=True)
    assert set(paths) == {"json", "md", "html"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json", "report.md"]
    assert paths["json"].read_text(encoding="utf-8") == to_json(report)
    assert paths["md"].read_text(encoding="utf-8") == render_markdown(report)
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in paths.values())

    only_two = write_reports(report, tmp_path / "out2")
    assert set(only_two) == {"json", "md"}
    with pytest.raises(ValueError):
        write_reports(report, tmp_path / "out3", html=True)


def test_write_reports_renders_everything_before_replacing_anything(case, tmp_path, monkeypatch):
    ref, cur, report = case
    write_reports(report, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def boom(*a, **k):
        raise RuntimeError("renderer failed")

    monkeypatch.setattr("auditor.report.html.render_html", boom)
    other = Report.from_dict({**report.to_dict(), "seed": 99})
    with pytest.raises(RuntimeError):
        write_reports(other, tmp_path, ref=ref, cur=cur, html=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_write_text_atomic_keeps_old_file_when_replace_fails(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    write_text_atomic(target, "old\n")

    def fail_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report_json.os, "replace", fail_replace)
    with pytest.raises(OSError):
        write_text_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["report.json"]


# --- markdown ---------------------------------------------------------------------------

_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def test_markdown_table_first_then_folded_details(case):
    _, _, report = case
    md = render_markdown(report)
    table = md.index("| # | Severity |")
    assert table < md.index("<details>")
    assert md.count("<details>") == md.count("</details>") == len(report.findings)
    rows = [line for line in md.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert [r.split("|")[2].strip() for r in rows] == ["**FAIL**", "**WARN**", "info"]
    # every table row keeps exactly 8 cells: no pipe from the data broke out
    assert all(len(_UNESCAPED_PIPE.findall(r)) == 9 for r in rows)
    assert "alpha=0.01 across 4 rules" in md
    assert "warnings use alpha=0.05" in md
    assert "rules/default\\.yaml" in md or "rules/default.yaml" in md


def test_markdown_neutralises_adversarial_text(case):
    _, _, report = case
    md = render_markdown(report)
    tags = set(re.findall(r"<[^>]*>", md))
    assert tags <= {"<details>", "</details>", "<summary>", "</summary>"}, tags - {"<details>"}
    # links and images need an unescaped "](" / "![": the brackets arrive escaped
    assert not re.search(r"(?<!\\)\]\(", md)
    assert "![x]" not in md and "!\\[x\\]" in md
    assert "@octocat" not in md and "@\u2060octocat" in md
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f\ufffe]", md)
    # the payload is still readable, as escaped text
    assert "&lt;script&gt;window.\\_\\_pwned=1" in md
    # quoted example lines start with "> " and their markdown-active starts are escaped
    assert "> \\# heading?" in md
    assert "> \\- item" in md
    assert "> 1\\. num" in md
    assert "> &gt; quote" in md


def test_markdown_tolerates_missing_rule_keys(case):
    _, _, report = case
    bare = Report.from_dict({**report.to_dict(), "rules": {}})
    md = render_markdown(bare)
    assert "Benjamini-Hochberg" in md
    assert "Bonferroni: a finding" not in md
    empty = Report.from_dict({**report.to_dict(), "findings": [], "status": "pass"})
    assert "No findings." in render_markdown(empty)


@pytest.mark.parametrize("max_chars", [60000, 8000])
def test_markdown_stays_under_budget_with_500_findings(max_chars):
    report = _many_findings(500)
    md = render_markdown(report, max_chars=max_chars)
    assert len(md) <= max_chars
    assert md.index("| # | Severity |") < md.index("<details>")
    assert "more finding(s) not shown in this table" in md
    assert "left out to fit a comment" in md
    assert md.count("<details>") == md.count("</details>") >= 1
    # the most severe findings are the ones kept
    first_rows = [line for line in md.splitlines() if re.match(r"^\| \d+ \|", line)][:5]
    assert all("FAIL" in r for r in first_rows)
    assert "... and 180 more" in md  # record ids truncated in the details


# --- JUnit ------------------------------------------------------------------------------


def test_junit_one_testcase_per_rule_and_failures(case):
    _, _, report = case
    root = ET.fromstring(render_junit(report).encode("utf-8"))
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["clusters", "drift", "duplicates", "labels"]
    assert all(c.get("classname") == "auditor.rules" for c in cases)
    failing = {c.get("name"): c.findall("failure") for c in cases}
    assert [n for n, f in failing.items() if f] == ["clusters"]
    assert suite.get("tests") == "4" and suite.get("failures") == "1"
    msg = failing["clusters"][0].get("message")
    assert msg is not None and msg.startswith("cluster over-represented") and P_IMG in msg
    drift = cases[1]
    assert drift.find("failure") is None
    out = drift.find("system-out")
    assert out is not None and "[WARN]" in (out.text or "")
    assert cases[3].find("failure") is None and cases[3].find("system-out") is None


def test_junit_failure_per_finding_and_fallback_names(case):
    _, _, report = case
    d = report.to_dict()
    extra = dict(d["findings"][0], summary="second failure", rule="clusters")
    many = Report.from_dict({**d, "findings": d["findings"] + [extra], "rules": {}})
    root = ET.fromstring(render_junit(many, failure_per_finding=False))
    cases = root.findall("./testsuite/testcase")
    # no rules["names"]: the rules of the findings, in order of appearance
    assert sorted(c.get("name") for c in cases) == ["clusters", "drift", "duplicates"]
    clusters = next(c for c in cases if c.get("name") == "clusters")
    assert len(clusters.findall("failure")) == 1
    assert "2 failing findings" in (clusters.find("failure").get("message") or "")
    per = ET.fromstring(render_junit(many))  # the default: a failure per failing finding
    per_clusters = next(c for c in per.findall("./testsuite/testcase") if c.get("name") == "clusters")
    assert len(per_clusters.findall("failure")) == 2


def test_junit_survives_xml_illegal_characters(case):
    _, _, report = case
    d = report.to_dict()
    d["findings"][0]["summary"] = "bad \x00\x01\x08\x0c\x1b\ufffe\uffff\ud800 chars & <tags>"
    d["findings"][0]["record_ids"] = ["id\x00one", "id\x1btwo"]
    text = render_junit(Report.from_dict(d))
    root = ET.fromstring(text.encode("utf-8"))
    failure = root.find("./testsuite/testcase/failure")
    assert failure is not None
    assert failure.get("message") == "bad chars & <tags>"
    assert "idone" in (failure.text or "")


# --- HTML (string level) ------------------------------------------------------------------

ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "h4", "p", "span",
    "table", "thead", "tbody", "tr", "th", "td", "nav", "a", "section", "svg", "circle", "rect", "text",
    "dl", "dt", "dd", "div", "pre", "i", "footer",
}  # fmt: skip
ALLOWED_ATTRS = {
    "charset", "http-equiv", "content", "name", "lang", "class", "id", "href", "xmlns", "viewbox",
    "width", "height", "role", "cx", "cy", "r", "x", "y",
}  # fmt: skip


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []
        self._style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))
        self._style = tag == "style"

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_endtag(self, tag):
        self._style = False

    def handle_data(self, data):
        if not self._style:
            self.text.append(data)


def test_html_structure_has_no_markup_from_data(page):
    parser = _Collect()
    parser.feed(page)
    tags = {t for t, _ in parser.tags}
    attrs = {k for _, a in parser.tags for k, _ in a}
    assert tags <= ALLOWED_TAGS, tags - ALLOWED_TAGS
    assert attrs <= ALLOWED_ATTRS, attrs - ALLOWED_ATTRS
    hrefs = [v for _, a in parser.tags for k, v in a if k == "href"]
    assert hrefs and all(v is not None and re.fullmatch(r"#[a-z]+(-\d+)?", v) for v in hrefs)
    assert page.count("<style>") == 1 and page.count("</style>") == 1
    assert "<script" not in page.lower()
    assert "default-src 'none'" in page
    text = "".join(parser.text)
    for payload in HTML_PAYLOADS:
        assert payload in text  # shown to the reviewer as text
    assert "\x1b" not in page and "\x00" not in page


def test_html_map_highlights_flagged_records_and_caps_points(case, page):
    ref, cur, report = case
    overview = page[page.index('<section id="map">') : page.index('<section id="clusters">')]
    n_fail = len(report.findings[0].record_ids)
    n_warn = len(report.findings[1].record_ids)
    assert overview.count('class="p-fail"') == n_fail
    assert overview.count('class="p-warn"') == n_warn
    assert overview.count("<circle") == len(ref) + len(cur)
    small = render_html(report, ref, cur, max_points=100)
    small_overview = small[small.index('<section id="map">') : small.index('<section id="clusters">')]
    assert small_overview.count("<circle") == 100
    # flagged records are kept first when subsampling (capped at half the points)
    assert small_overview.count('class="p-fail"') + small_overview.count('class="p-warn"') == 50
    clusters = page[page.index('<section id="clusters">') : page.index('<section id="findings">')]
    assert "finding #1" in clusters  # the adversarial records form a marked cluster
    assert page.count('id="finding-') == len(report.findings)


# --- terminal ---------------------------------------------------------------------------

_COLOUR_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def _has_colour(out: str) -> bool:
    for params in _COLOUR_SGR.findall(out):
        codes = [int(c) for c in params.split(";") if c]
        if any(30 <= c <= 49 or 90 <= c <= 107 for c in codes):
            return True
    return False


def test_terminal_colours_and_no_color(case, monkeypatch):
    _, _, report = case
    monkeypatch.delenv("NO_COLOR", raising=False)
    buf = io.StringIO()
    render_terminal(report, Console(file=buf, force_terminal=True, width=200))
    assert _has_colour(buf.getvalue())

    monkeypatch.setenv("NO_COLOR", "1")
    buf = io.StringIO()
    render_terminal(report, Console(file=buf, force_terminal=True, width=200))
    assert not _has_colour(buf.getvalue())
    assert "FAIL" in buf.getvalue()


def test_terminal_prints_markup_and_escapes_literally(case):
    _, _, report = case
    d = report.to_dict()
    d["findings"][0]["summary"] = "[bold red]markup[/] \x1b[31mansi\x1b[0m"
    buf = io.StringIO()
    render_terminal(Report.from_dict(d), Console(file=buf, force_terminal=False, width=300))
    out = buf.getvalue()
    assert "[bold red]markup[/]" in out
    assert "\x1b" not in out
    assert "ansi" in out


def test_render_functions_write_nothing_to_cwd(case, tmp_path, monkeypatch):
    # renderers are pure: only write_reports touches the filesystem
    ref, cur, report = case
    monkeypatch.chdir(tmp_path)
    render_markdown(report)
    render_junit(report)
    render_html(report, ref, cur)
    assert list(Path(tmp_path).iterdir()) == []


def test_json_writes_lone_surrogates_from_data(case, tmp_path):
    _, _, report = case
    d = report.to_dict()
    d["findings"][0]["record_ids"] = ["ok-\u00e9", "bad-\ud800"]
    odd = Report.from_dict(d)
    paths = write_reports(odd, tmp_path)
    back = Report.from_dict(json.loads(paths["json"].read_text(encoding="utf-8")))
    assert back.findings[0].record_ids == ("ok-\u00e9", "bad-\ud800")
    assert "bad-" in paths["md"].read_text(encoding="utf-8")


def test_every_registered_check_says_why_it_matters():
    """Each check's findings carry our own one-sentence reason in the reports (not the
    rules file's `why`, which a pull request could rewrite); a new check needs one."""
    from auditor.checks import registry
    from auditor.report._common import WHY

    missing = sorted(set(registry()) - set(WHY))
    assert missing == [], f"no WHY sentence for: {missing}"
