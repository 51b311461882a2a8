"""The exit-code contract (issue 9 "fast errors", issue 10 item 5).

0 pass, 1 the gate failed, 2 a user or environment error (one line, nothing written,
checked before any heavy import), 3 an internal error (one line pointing at --debug).
A crash must never read as 0 or 1.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auditor import __version__, cli
from tests.helpers import ROOT

SAMPLE = ROOT / "sample_data"
HEAVY = ("numpy", "torch", "polars", "pandas", "scipy", "sklearn", "faiss", "sentence_transformers", "yaml")

# Runs main() once per case in ONE interpreter and reports, per case, the exit code, the
# stderr lines, and which heavy modules were imported by then.
DRIVER = r"""
import io, json, sys
from auditor.cli import main
heavy = json.loads(sys.argv[2])
results = {}
for name, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    old, sys.stderr = sys.stderr, err
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.stderr = old
    results[name] = {"code": code, "stderr": err.getvalue(), "heavy": [m for m in heavy if m in sys.modules]}
print(json.dumps(results))
"""


def _cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, substring of the one error line)."""
    cur, ref = str(SAMPLE / "alpaca_sample.jsonl"), str(SAMPLE / "seed_tasks.jsonl")
    (tmp / "data.txt").write_text("hello\n")
    (tmp / "a_file").write_text("x")
    (tmp / "report_dir_is_a_file").write_text("x")
    (tmp / "junit_dir").mkdir()
    (tmp / "empty_folder").mkdir()
    os.mkfifo(tmp / "pipe.jsonl")
    out = str(tmp / "out")
    return {
        "missing input": (
            ["audit", str(tmp / "nope.jsonl"), "-r", ref, "--out", out],
            "nope.jsonl: file not found",
        ),
        "missing reference": (
            ["audit", cur, "-r", str(tmp / "gone.csv"), "--out", out],
            "gone.csv: file not found",
        ),
        "unknown format": (
            ["audit", str(tmp / "data.txt"), "-r", ref, "--out", out],
            "unknown file type '.txt'",
        ),
        "fifo input": (["audit", str(tmp / "pipe.jsonl"), "-r", ref, "--out", out], "not a regular file"),
        "folder without dataset": (
            ["audit", str(tmp / "empty_folder"), "-r", ref, "--out", out],
            "not a datasets save_to_disk folder",
        ),
        "--out is a file": (
            ["audit", cur, "-r", ref, "--out", str(tmp / "report_dir_is_a_file")],
            "--out " + str(tmp / "report_dir_is_a_file") + ": exists and is not a folder",
        ),
        "--out under a file": (
            ["audit", cur, "-r", ref, "--out", str(tmp / "a_file" / "reports")],
            "cannot be created",
        ),
        "--junit is a folder": (
            ["audit", cur, "-r", ref, "--out", out, "--junit", str(tmp / "junit_dir")],
            "--junit " + str(tmp / "junit_dir") + ": is a folder",
        ),
        "--junit in an uncreatable folder": (
            ["audit", cur, "-r", ref, "--out", out, "--junit", str(tmp / "a_file" / "sub" / "junit.xml")],
            "cannot be created",
        ),
        "--rules missing": (
            ["audit", cur, "-r", ref, "--out", out, "--rules", str(tmp / "rules.yaml")],
            "rules.yaml: rules file not found",
        ),
        "diff --junit is a folder": (
            [
                "diff",
                "a",
                "b",
                "--store",
                str(tmp / "store"),
                "--out",
                out,
                "--junit",
                str(tmp / "junit_dir"),
            ],
            "is a folder",
        ),
        "embed missing input": (["embed", str(tmp / "nope.parquet")], "nope.parquet: file not found"),
    }


def test_bad_paths_exit_2_one_line_nothing_written_no_heavy_import(tmp_path):
    cases = _cases(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps({k: v[0] for k, v in cases.items()}), json.dumps(HEAVY)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"},
    )
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    for name, (_, needle) in cases.items():
        got = results[name]
        lines = [ln for ln in got["stderr"].splitlines() if ln.strip()]
        assert got["code"] == 2, (name, got)
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (name, lines)
        assert "Traceback" not in got["stderr"]
    # no heavy library was needed to say any of that (the last case ran after all others)
    assert results[list(cases)[-1]]["heavy"] == [], results
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no store created


def test_missing_input_exits_2_in_well_under_a_second(tmp_path):
    argv = [
        sys.executable,
        str(ROOT / "cli.py"),
        "audit",
        str(tmp_path / "nope.jsonl"),
        "-r",
        str(SAMPLE / "seed_tasks.jsonl"),
    ]
    times = []
    for _ in range(3):  # the best of three: a busy machine may stall one start-up
        t0 = time.perf_counter()
        r = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        times.append(time.perf_counter() - t0)
        assert r.returncode == 2 and r.stderr.strip().endswith("file not found (no such file or folder)")
    assert min(times) < 1.0, times


def test_every_input_suffix_the_cli_accepts_is_one_io_reads(tmp_path):
    """cli.INPUT_SUFFIXES repeats io.py's formats (to stay import-light): they must agree."""
    from auditor.io import load

    bodies = {
        ".jsonl": '{"text": "a b"}\n{"text": "c d"}\n',
        ".ndjson": '{"text": "a b"}\n{"text": "c d"}\n',
        ".json": '[{"text": "a b"}, {"text": "c d"}]',
        ".csv": "text\na b\nc d\n",
    }
    assert set(bodies) == set(cli.INPUT_SUFFIXES)
    for suffix, body in bodies.items():
        for gz in (False, True):
            p = tmp_path / f"data{suffix}{'.gz' if gz else ''}"
            p.write_bytes(gzip.compress(body.encode()) if gz else body.encode())
            cli.check_input(p)
            assert load(p).texts == ("a b", "c d")


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    return int(exc.value.code or 0)


def _boom(*_a, **_k):
    raise ValueError("Input contains NaN.\nsecond line")


def test_internal_error_exits_3_with_one_line_and_a_pointer_to_debug(monkeypatch, capsys):
    monkeypatch.delenv("AUDITOR_DEBUG", raising=False)
    monkeypatch.setattr("auditor.checks.registry", _boom)
    assert _main(["checks"]) == 3
    err = capsys.readouterr().err
    assert err == (
        "auditor: internal error: ValueError: Input contains NaN. second line "
        "(run with --debug for the traceback)\n"
    )


@pytest.mark.parametrize("how", ["option", "env"])
def test_debug_prints_the_traceback_and_still_exits_3(monkeypatch, capsys, how):
    monkeypatch.setattr("auditor.checks.registry", _boom)
    if how == "env":
        monkeypatch.setenv("AUDITOR_DEBUG", "1")
        code = _main(["checks"])
    else:
        monkeypatch.delenv("AUDITOR_DEBUG", raising=False)
        code = _main(["--debug", "checks"])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback (most recent call last)" in err and "_boom" in err
    assert err.rstrip().endswith("auditor: internal error: ValueError: Input contains NaN. second line")


def test_crash_during_audit_is_3_not_a_verdict_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """Issue 10 item 5: a library failure mid-audit (e.g. NaN embeddings reaching a check)
    used to exit 1, reading as "the data failed"."""
    monkeypatch.delenv("AUDITOR_DEBUG", raising=False)
    monkeypatch.setattr("auditor.api.run_audit", _boom)
    out, junit = tmp_path / "out", tmp_path / "junit.xml"
    argv = ["audit", str(SAMPLE / "alpaca_sample.jsonl"), "-r", str(SAMPLE / "seed_tasks.jsonl")]
    assert _main([*argv, "--out", str(out), "--junit", str(junit)]) == 3
    assert "internal error: ValueError" in capsys.readouterr().err
    assert not out.exists() and not junit.exists()


@pytest.mark.parametrize(
    "exc, code, needle",
    [
        (
            EOFError("Ran out of input"),
            3,
            "auditor: internal error: EOFError: Ran out of input",
        ),  # click said "Aborted!", 1
        (
            PermissionError(13, "Permission denied", "/x/cache/shard-1.npy"),
            2,
            "error: /x/cache/shard-1.npy: Permission denied",
        ),
        (OSError(28, "No space left on device"), 2, "error: No space left on device"),
        (MemoryError(), 2, "error: out of memory"),
        (KeyboardInterrupt(), 130, "aborted"),
    ],
)
def test_environment_errors_and_interrupts(monkeypatch, capsys, exc, code, needle):
    def raise_it(*_a, **_k):
        raise exc

    monkeypatch.delenv("AUDITOR_DEBUG", raising=False)
    monkeypatch.setattr("auditor.checks.registry", raise_it)
    assert _main(["checks"]) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(needle), lines


def test_usage_errors_are_2(capsys):
    assert _main(["audit", "--no-such-option"]) == 2
    assert _main(["no-such-command"]) == 2
    assert _main(["audit", "x.jsonl", "--batch-size", "0"]) == 2
    capsys.readouterr()


def test_version_and_help_document_exit_3(capsys):
    assert _main(["--version"]) == 0
    assert capsys.readouterr().out == f"auditor {__version__}\n" == "auditor 0.1.0\n"
    assert _main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "3 internal error" in text and "--debug" in text and "--version" in text


def test_readme_exit_code_table_lists_3():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("### Exit codes") :].split("\n### ")[0]
    assert "| 3 |" in table and "--debug" in table


def test_closed_stdout_pipe_keeps_the_verdict_exit_code():
    """`auditor audit --json | head`: the reader closing the pipe early is not an error;
    the process keeps its own exit code and prints no traceback."""
    import subprocess
    import sys

    # the child writes only after the parent has closed its end (told so on stdin), so
    # the write always meets a closed pipe
    code = (
        "import sys; from auditor.cli import _write_stdout; sys.stdin.readline(); "
        "_write_stdout('x' * (1 << 20)); _write_stdout('more'); sys.exit(7)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 7, err
    assert "Traceback" not in err and "BrokenPipe" not in err
