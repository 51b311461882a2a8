"""The HTML report in a real headless browser (Debian's ``chromium``; CI installs it).

A report is built from records carrying script, event-handler, ``javascript:`` and
``</style>`` payloads.  Chromium loads it; the dumped DOM must show the title unchanged,
no element or attribute that came from the data, and the payloads as visible text; the
browser's console must be silent (a blocked inline script would log a CSP violation
there).  A screenshot is kept in tests/artifacts/report.png.  The first test checks the
harness itself: a page that does run script must be caught, so these tests can fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from auditor.report import render_html
from tests.test_report import HTML_PAYLOADS, adversarial_inputs, adversarial_report

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "headless browser test needs Debian's 'chromium' (apt-get install chromium); CI installs it",
        allow_module_level=True,
    )

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CONSOLE_LINE = re.compile(r":CONSOLE[:(]")


def run_chromium(page: Path, profile: Path, screenshot: Path | None = None) -> tuple[str, str, float]:
    """Load ``page`` headless; return (dumped DOM, chromium's log, seconds taken)."""
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # CI containers run as root, where the sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
    ]
    if screenshot is not None:
        cmd += [f"--screenshot={screenshot}", "--window-size=1400,2000"]
    start = time.perf_counter()
    proc = subprocess.run(
        [*cmd, page.as_uri()], capture_output=True, text=True, timeout=120, errors="replace"
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr, elapsed


_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())


class _Dom(HTMLParser):
    """Elements, attributes and visible text of the DOM chromium serialised."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.title = ""
        self._in: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag not in _VOID:
            self._in.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in self._in:
            while self._in.pop() != tag:
                pass

    def handle_data(self, data):
        if self._in and self._in[-1] == "title" and "svg" not in self._in:
            self.title += data
        elif not self._in or self._in[-1] != "style":
            self.text.append(data)


def _parse(dom: str) -> _Dom:
    parsed = _Dom()
    parsed.feed(dom)
    return parsed


def test_harness_catches_a_page_that_runs_script(tmp_path):
    # the same payload, unescaped and without a CSP: the harness must see it run
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>auditor report</title></head>"
        f"<body><p>{HTML_PAYLOADS[0]}</p><script>console.error('from data')</script></body></html>",
        encoding="utf-8",
    )
    dom, log, _ = run_chromium(bad, tmp_path / "profile")
    parsed = _parse(dom)
    assert parsed.title == "PWNED"
    assert any(tag == "script" for tag, _ in parsed.elements)
    assert CONSOLE_LINE.search(log)


def test_report_payloads_stay_text_in_headless_chromium(tmp_path):
    ref, cur, adv = adversarial_inputs()
    report = adversarial_report(ref, cur, adv)
    page = tmp_path / "report.html"
    page.write_text(render_html(report, ref, cur), encoding="utf-8")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)

    dom, log, elapsed = run_chromium(page, tmp_path / "profile", screenshot=shot)
    print(f"chromium load + dump-dom + screenshot: {elapsed:.2f}s")
    (ARTIFACTS / "chromium_seconds.txt").write_text(f"{elapsed:.3f}\n")

    parsed = _parse(dom)
    assert parsed.title == "auditor report: FAIL"  # no payload changed document.title
    tags = {tag for tag, _ in parsed.elements}
    assert not tags & {"script", "img", "iframe", "object", "embed", "foreignobject"}
    for tag, attrs in parsed.elements:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "a":
            assert (attrs.get("href") or "").startswith("#"), attrs
    # the svg in the data must not have become an element with a handler: the only
    # svg elements are the report's own maps and bar chart
    assert sum(1 for tag, _ in parsed.elements if tag == "svg") == 2 + sum(
        1 for f in report.findings if f.severity in ("fail", "warn") and f.record_ids
    )
    text = "".join(parsed.text)
    for payload in HTML_PAYLOADS:
        assert payload in text, payload
    console = [line for line in log.splitlines() if CONSOLE_LINE.search(line)]
    assert console == []
    assert shot.exists() and shot.stat().st_size > 20_000
