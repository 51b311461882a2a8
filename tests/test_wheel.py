"""The installed package is complete (issue 9): a wheel built from the checkout, installed
into a fresh environment, audits two files from a folder outside the repository with the
default rules, and every library auditor imports is a declared dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib

from tests.helpers import ROOT, SAMPLE

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    deps = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"].get("optional-dependencies", {}).values():
        deps += extra
    return {_norm(re.split(r"[ <>=!~;\[]", d, maxsplit=1)[0]) for d in deps}


def _imported_top_level(paths: list[Path]) -> set[str]:
    mods: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return mods


def test_every_third_party_import_is_a_declared_dependency():
    files = sorted((ROOT / "auditor").rglob("*.py")) + [ROOT / "cli.py"]
    third_party = _imported_top_level(files) - set(sys.stdlib_module_names) - {"auditor", "__future__"}
    dists = importlib.metadata.packages_distributions()
    missing = {}
    for mod in sorted(third_party):
        owners = {_norm(d) for d in dists.get(mod, [])}
        assert owners, f"{mod} is imported by auditor/ but not installed"
        if not owners & _declared():
            missing[mod] = sorted(owners)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def _build_wheel(tmp: Path) -> Path:
    # build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "auditor", src / "auditor", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(dist), str(src)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = dist.glob("auditor-*.whl")
    return wheel


def _fresh_env(tmp: Path, wheel: Path) -> Path:
    """A new venv holding only the wheel; the shared venv's site-packages is reachable
    through a plain path line (not addsitedir: its editable-install hook for the checkout
    must not run), so torch and friends need not be installed again."""
    venv = tmp / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    r = subprocess.run(
        [base, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "shared_site.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return venv


def _head(src: Path, dst: Path, n: int) -> Path:
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(line for _, line in zip(range(n), f)), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(tmp)
    return wheel, _fresh_env(tmp, wheel), tmp


def test_wheel_ships_the_package_rules_and_entry_point(installed):
    wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = {
            _norm(re.split(r"[ <>=!~;\[(]", line.split(":", 1)[1].strip(), maxsplit=1)[0])
            for line in z.read(meta).decode().splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line
        }
        entry = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        rules = z.read("auditor/presets/default.yaml")
    assert "auditor/cli.py" in names and "auditor/py.typed" in names
    assert not any(n == "cli.py" or n.startswith(("tests/", "rules/", "sample_data/")) for n in names)
    assert rules == (ROOT / "rules" / "default.yaml").read_bytes()
    assert re.search(r"^auditor\s*=\s*auditor\.cli:main$", entry, re.M), entry
    assert {
        "transformers",
        "tokenizers",
        "safetensors",
        "sentence-transformers",
        "typer",
        "pyyaml",
    } <= requires


def test_installed_auditor_audits_from_outside_the_repository(installed):
    _, venv, tmp = installed
    work = tmp / "elsewhere"
    work.mkdir()
    assert ROOT not in work.parents
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AUDITOR_DEBUG", "VIRTUAL_ENV")} | {
        "NO_COLOR": "1",
        "HF_HUB_OFFLINE": "1",
        "XDG_CACHE_HOME": str(tmp / "xdg"),
    }
    py, exe = venv / "bin" / "python", venv / "bin" / "auditor"

    where = subprocess.run(
        [str(py), "-c", "import auditor, auditor.rules as r; print(auditor.__file__); print(r.DEFAULT_RULES_PATH)"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for path in where:
        assert Path(path).is_relative_to(venv) and not Path(path).is_relative_to(ROOT), where

    r = subprocess.run([str(exe), "--help"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Exit codes" in r.stdout and "audit" in r.stdout, r.stderr
    r = subprocess.run(
        [str(exe), "--version"], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.stdout == "auditor 0.1.0\n"

    cur = _head(SAMPLE / "alpaca_sample.jsonl", work / "current.jsonl", 40)
    ref = _head(SAMPLE / "alpaca_reference.jsonl", work / "reference.jsonl", 40)
    r = subprocess.run(
        [str(exe), "audit", cur.name, "-r", ref.name, "--model", "static", "--out", "out",
         "--cache-dir", str(tmp / "cache"), "--quiet"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode in (0, 1), r.stderr[-3000:]
    report = json.loads((work / "out" / "report.json").read_text())
    assert report["inputs"]["current"]["n_records"] == 40
    assert report["rules"]["matches_default"] is True and report["rules"]["n_rules"] >= 7
    assert (work / "out" / "report.md").is_file()
