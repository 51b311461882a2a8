"""The CI building blocks run as CI would run them (issue 13): the composite Action's own
`run:` steps in bash against an installed wheel, the pre-commit hook through
`pre-commit try-repo`, the Dockerfile's structure, and a CI log (no terminal) that reads
line by line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, SAMPLE
from tests.test_wheel import _build_wheel, _fresh_env, _head


@pytest.fixture(scope="module")
def venv(tmp_path_factory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("ci")
    wheel = _build_wheel(tmp)
    return _fresh_env(tmp, wheel), wheel


def _env(tmp: Path, bin_dir: Path) -> dict[str, str]:
    drop = ("PYTHONPATH", "AUDITOR_DEBUG", "VIRTUAL_ENV", "COLUMNS")
    return {k: v for k, v in os.environ.items() if k not in drop} | {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "NO_COLOR": "1",
        "XDG_CACHE_HOME": str(tmp / "xdg"),
    }


def _expand(text: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    """GitHub's ``${{ inputs.x }}`` / ``${{ steps.s.outputs.y }}`` expressions, as the runner fills them."""

    def one(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        if expr.startswith("inputs."):
            return inputs[expr[len("inputs.") :]]
        if expr.startswith("steps."):
            return outputs.get(expr.split(".")[-1], "")
        raise AssertionError(f"unexpected expression {expr}")

    return re.sub(r"\$\{\{(.*?)\}\}", one, text)


def test_action_steps_install_audit_summarise_and_gate(venv, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env_dir, wheel = venv
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    uses = [s["uses"].split("@")[0] for s in action["runs"]["steps"] if "uses" in s]
    assert uses == ["actions/setup-python", "actions/cache", "actions/upload-artifact"]
    cache = next(s for s in action["runs"]["steps"] if s.get("uses", "").startswith("actions/cache"))
    # the model (pip cache) is cached, never the embeddings a pull request could write
    assert cache["with"]["path"] == "~/.cache/pip"
    inputs = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
    work = tmp_path / "repo"
    work.mkdir()
    _head(SAMPLE / "alpaca_sample.jsonl", work / "current.jsonl", 60)
    _head(SAMPLE / "alpaca_reference.jsonl", work / "reference.jsonl", 60)
    inputs |= {
        "current": "current.jsonl",
        "reference": "reference.jsonl",
        "package": str(wheel),
        "pip-args": "--no-deps --no-index",  # offline here: the dependencies are in the venv already
        "args": f"--model static --cache-dir {tmp_path / 'cache'}",
        "text-field": "instruction output",
    }
    summary, gh_out = tmp_path / "summary.md", tmp_path / "output"
    outputs: dict[str, str] = {}
    env = _env(tmp_path, env_dir / "bin") | {"GITHUB_STEP_SUMMARY": str(summary)}
    results = {}
    for step in action["runs"]["steps"]:
        if "run" not in step:
            continue
        gh_out.write_text("")
        step_env = env | {"GITHUB_OUTPUT": str(gh_out)}
        step_env |= {k: _expand(str(v), inputs, outputs) for k, v in step.get("env", {}).items()}
        script = step["run"]
        if step["name"] == "Install auditor":
            # the test venv has no pip of its own: the shared pip installs into it
            script = script.replace("python -m pip", f"{sys.executable} -m pip --python {env_dir / 'bin' / 'python'}")
        r = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", _expand(script, inputs, outputs)],
            cwd=work, env=step_env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        results[step["name"]] = r
        for line in gh_out.read_text().splitlines():
            k, _, v = line.partition("=")
            outputs[k] = v
        if step["name"] != "Gate":
            assert r.returncode == 0, (step["name"], r.stdout[-2000:], r.stderr[-3000:])
    assert "installed auditor 0.1.0 in" in results["Install auditor"].stdout
    code = int(outputs["exit-code"])
    assert code in (0, 1), results["Audit"].stderr[-3000:]
    assert results["Gate"].returncode == code
    report = json.loads((work / "auditor-report" / "report.json").read_text())
    assert outputs["status"] == report["status"]
    assert report["inputs"]["current"]["fields"]["text"] == ["instruction", "output"]
    assert summary.read_text().startswith("## auditor: ")
    assert {p.name for p in (work / "auditor-report").iterdir()} >= {"report.md", "report.html", "junit.xml"}
    # the log of a job (no terminal): progress as whole lines, one line per finding
    log = results["Audit"].stderr.splitlines()
    assert not any("\r" in line or "\x1b" in line for line in log)
    assert any(re.search(r"embedding current\.jsonl: 60/60 done in [0-9.]+ s", line) for line in log)
    verdict = [line for line in log if re.match(r"(PASS|WARN|FAIL): \d+ failing", line)]
    assert len(verdict) == 1
    finding_lines = [line for line in log if re.match(r"(FAIL|WARN|INFO) #\d+ ", line)]
    assert len(finding_lines) == min(len(report["findings"]), 40)


def test_action_reports_a_bad_input_and_fails_the_gate(venv, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env_dir, _ = venv
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    steps = {s["name"]: s for s in action["runs"]["steps"] if "run" in s}
    inputs = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
    inputs |= {"current": "missing.jsonl", "reference": "missing.jsonl"}
    summary, gh_out = tmp_path / "summary.md", tmp_path / "output"
    gh_out.write_text("")
    env = _env(tmp_path, env_dir / "bin") | {"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(gh_out)}
    env |= {k: _expand(str(v), inputs, {}) for k, v in steps["Audit"]["env"].items()}
    r = subprocess.run(["bash", "-e", "-c", steps["Audit"]["run"]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "exit-code=2" in gh_out.read_text()
    assert "without a report" in summary.read_text()
    gate = subprocess.run(["bash", "-c", _expand(steps["Gate"]["run"], inputs, {})], env=env | {"CODE": "2"})
    assert gate.returncode == 2


def test_pre_commit_hook_runs_an_audit(venv, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env_dir, _ = venv
    pre_commit = Path(sys.executable).parent / "pre-commit"
    if not pre_commit.exists():
        pytest.skip("pre-commit is not installed (pip install pre-commit)")
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert [h["id"] for h in hooks] == ["auditor", "auditor-system"]
    assert all(h["entry"] == "auditor audit" for h in hooks)
    # try-repo clones a git repository: a copy of the hooks file in a throwaway one
    hook_repo = tmp_path / "hooks"
    hook_repo.mkdir()
    shutil.copy2(ROOT / ".pre-commit-hooks.yaml", hook_repo / ".pre-commit-hooks.yaml")
    repo = tmp_path / "data"
    repo.mkdir()
    env = _env(tmp_path, env_dir / "bin") | {"PRE_COMMIT_HOME": str(tmp_path / "pc"), "GIT_AUTHOR_NAME": "t",
                                            "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                                            "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    for d in (hook_repo, repo):
        subprocess.run(["git", "init", "-q", str(d)], check=True, env=env)
    subprocess.run(["git", "-C", str(hook_repo), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(hook_repo), "commit", "-qm", "hooks"], check=True, env=env)
    _head(SAMPLE / "alpaca_sample.jsonl", repo / "train.jsonl", 50)
    _head(SAMPLE / "alpaca_reference.jsonl", repo / "reference.jsonl", 50)
    rev = subprocess.run(
        ["git", "-C", str(hook_repo), "rev-parse", "HEAD"], check=True, env=env, capture_output=True, text=True
    ).stdout.strip()
    args = ["--reference", "reference.jsonl", "--model", "static", "--out", "out", "--cache-dir", str(tmp_path / "c")]
    # `files` picks the one data file under audit, as the hooks file's header says
    hook = {"id": "auditor-system", "args": args, "files": r"^train\.jsonl$"}
    config = {"repos": [{"repo": str(hook_repo), "rev": rev, "hooks": [hook]}]}
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    r = subprocess.run(
        [str(pre_commit), "run", "auditor-system", "--all-files", "--verbose"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = r.stdout + r.stderr
    assert (repo / "out" / "report.json").is_file(), out[-3000:]
    report = json.loads((repo / "out" / "report.json").read_text())
    assert report["inputs"]["current"]["path"] == "train.jsonl", out[-3000:]
    # pre-commit passes when the gate passes and blocks the commit when it fails
    assert r.returncode == (1 if report["status"] == "fail" else 0), out[-3000:]
    assert ("Passed" if r.returncode == 0 else "Failed") in out


def test_dockerfile_builds_offline_from_a_wheelhouse() -> None:
    """Structure only: no container runtime here.  FROM a pinned slim Python, pip never
    reaches an index, the wheelhouse is removed, and the tool runs as a non-root user."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert re.fullmatch(r"FROM python:3\.\d+-slim", lines[0])
    install = next(ln for ln in lines if "pip install" in ln)
    assert "--no-index" in install and "--find-links /tmp/wheelhouse auditor" in install
    assert "PIP_NO_INDEX=1" in text and "HF_HUB_OFFLINE=1" in text
    assert "rm -rf /tmp/wheelhouse" in text
    users = [ln for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] != "USER root"
    assert lines[-2] == 'ENTRYPOINT ["auditor"]'
    # every instruction is one Docker knows (a typo would fail the build)
    known = {"FROM", "ENV", "COPY", "RUN", "USER", "WORKDIR", "ENTRYPOINT", "CMD"}
    continued = False
    for ln in lines:
        if not continued:
            assert ln.split()[0] in known, ln
        continued = ln.endswith("\\")


def test_gitignore_covers_the_readme_outputs() -> None:
    ignored = set((ROOT / ".gitignore").read_text().split())
    assert {"rounds/", "diff/", "auditor-diff/", "out/", "auditor-report/"} <= ignored
