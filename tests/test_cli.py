"""The CLI contract: exit codes, one-line errors for bad input, nothing half-written."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

SAMPLE = ROOT / "sample_data"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD = [{"instruction": f"Write a sentence about topic {i}.", "output": f"Sentence {i}."} for i in range(5)]


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, list[str], str]]:
    """name -> (current file, extra args, substring the error must contain)."""
    nonutf = tmp / "nonutf.jsonl"
    nonutf.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    malformed = tmp / "malformed.jsonl"
    malformed.write_text('{"text": "a"}\n{"text": "b"}\n{"text": \n', encoding="utf-8")
    return {
        "missing file": (tmp / "nope.jsonl", [], "nope.jsonl"),
        "unknown format": (write_jsonl(tmp / "data.txt", GOOD), [], "data.txt"),
        "empty dataset": (write_jsonl(tmp / "empty.jsonl", []), [], "empty.jsonl"),
        "malformed line": (malformed, [], "malformed.jsonl:3"),
        "missing field": (
            write_jsonl(tmp / "missing.jsonl", [{"prompt": "p", "completion": "c"}, {"prompt": "q"}]),
            ["--text-field", "completion"],
            "missing.jsonl:2",
        ),
        "non-UTF-8": (nonutf, [], "nonutf.jsonl:2"),
        "not a string": (
            write_jsonl(tmp / "number.jsonl", [{"text": "fine"}, {"text": 42}]),
            [],
            "number.jsonl:2",
        ),
        "unknown shape": (write_jsonl(tmp / "shape.jsonl", [{"foo": "x", "bar": "y"}]), [], "foo"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "unknown format",
        "empty dataset",
        "malformed line",
        "missing field",
        "non-UTF-8",
        "not a string",
        "unknown shape",
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, case):
    ref = write_jsonl(tmp_path / "ref.jsonl", GOOD)
    current, extra, needle = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    r = run_cli(
        "audit",
        str(current),
        "--reference",
        str(ref),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        *extra,
        cwd=tmp_path,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert needle in lines[0]
    assert "Traceback" not in r.stderr
    assert not out.exists() and not cache.exists()


def test_usage_errors_exit_2(tmp_path):
    r = run_cli("audit", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run_cli("audit", str(SAMPLE / "alpaca_sample.jsonl"), cwd=tmp_path)  # no --reference
    assert r.returncode == 2 and "--reference" in r.stderr
    bad_rules = tmp_path / "rules.yaml"
    bad_rules.write_text("rules:\n  - check: mmd\n    params: {permutation: 3}\n")
    r = run_cli(
        "audit",
        str(SAMPLE / "alpaca_sample.jsonl"),
        "-r",
        str(SAMPLE / "seed_tasks.jsonl"),
        "--rules",
        str(bad_rules),
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "rules[0].params.permutation: unknown parameter" in r.stderr


def test_help_teaches_and_is_fast_to_import(tmp_path):
    r = run_cli("--help", cwd=tmp_path)
    assert r.returncode == 0 and "Exit codes" in r.stdout and "audit" in r.stdout
    r = run_cli("audit", "--help", cwd=tmp_path)
    assert "--text-field" in r.stdout and "--reference" in r.stdout
    # --help must not import the heavy stack (checked by module, not by time)
    code = "import sys, auditor.cli; print(any(m in sys.modules for m in ('torch', 'sentence_transformers', 'numpy', 'polars')))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip() == "False"


def test_checks_lists_registry(tmp_path):
    r = run_cli("checks", cwd=tmp_path)
    assert r.returncode == 0
    for name in (
        "mmd",
        "classifier",
        "clusters",
        "triggers",
        "near_duplicates",
        "flipped_responses",
        "off_support",
    ):
        assert name in r.stdout
    # each parameter with its default and the valid range a rules file is held to
    assert "    permutations=1000  (integer 99..1000000)" in r.stdout.splitlines()


@pytest.mark.model
def test_audit_sample_real_model_fail_then_cached_pass(tmp_path):
    """Alpaca vs the human seed tasks fails; Alpaca vs another Alpaca sample passes; the
    second audit of the same records embeds nothing new (cache)."""
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    junit = tmp_path / "junit.xml"
    r = run_cli(
        "audit",
        str(SAMPLE / "alpaca_sample.jsonl"),
        "-r",
        str(SAMPLE / "seed_tasks.jsonl"),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--junit",
        str(junit),
        "--json",
        "--html",
        cwd=tmp_path,
    )
    assert r.returncode == 1, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["status"] == "fail" and report["schema_version"] == 1
    from auditor.encoders import BUNDLED_MODEL_SHA256

    assert report["model"]["sha256"] == BUNDLED_MODEL_SHA256
    assert (
        report["inputs"]["current"]["n_records"] == 400 and report["inputs"]["reference"]["n_records"] == 175
    )
    assert json.loads((out / "report.json").read_text()) == report
    assert (out / "report.md").read_text().strip() and (out / "report.html").exists() and junit.exists()
    fails = [f for f in report["findings"] if f["severity"] == "fail"]
    assert fails and all(f["record_ids"] or f["check"] == "mmd" for f in fails)
    shards = sorted(p.name for p in cache.rglob("shard-*.npy"))

    r2 = run_cli(
        "audit",
        str(SAMPLE / "alpaca_sample.jsonl"),
        "-r",
        str(SAMPLE / "alpaca_reference.jsonl"),
        "--out",
        str(tmp_path / "out2"),
        "--cache-dir",
        str(cache),
        "--quiet",
        cwd=tmp_path,
    )
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert json.loads((tmp_path / "out2" / "report.json").read_text())["status"] in ("pass", "warn")
    new = sorted(p.name for p in cache.rglob("shard-*.npy"))
    assert len(new) > len(shards)  # the new reference sample was embedded ...
    r3 = run_cli(
        "audit",
        str(SAMPLE / "alpaca_sample.jsonl"),
        "-r",
        str(SAMPLE / "alpaca_reference.jsonl"),
        "--out",
        str(tmp_path / "out3"),
        "--cache-dir",
        str(cache),
        "--quiet",
        cwd=tmp_path,
    )
    assert r3.returncode == 0
    assert sorted(p.name for p in cache.rglob("shard-*.npy")) == new  # ... and a re-run embeds nothing


def test_gzip_jsonl_audit_input_error_names_file(tmp_path):
    p = tmp_path / "data.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write('{"text": "a"}\n{"oops": 1}\n')
    ref = write_jsonl(tmp_path / "ref.jsonl", GOOD)
    r = run_cli("audit", str(p), "-r", str(ref), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 2 and "data.jsonl.gz:2" in r.stderr


def test_help_lists_whole_descriptions_completion_and_plain_usage():
    from typer.testing import CliRunner

    from auditor.cli import app

    runner = CliRunner()
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "80"})
    assert top.exit_code == 0 and "--install-completion" in top.output
    assert "--verbose" in top.output and "--quiet" in top.output
    assert "..." not in top.output.split("Commands:")[1]  # no description cut off
    usage = runner.invoke(app, ["audit", "--help"], env={"COLUMNS": "80"}).output
    assert "Usage: auditor audit [OPTIONS] CURRENT" in usage and "{" not in usage.splitlines()[0]
    assert "--embeddings-field" in usage and "--reference-text-field" in usage
