"""Store nits of issue 10 item 6, each attack reproduced first: names matched whole and
refused before any work, and a re-parented head round caught against a pinned head."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from auditor.curation import history, snapshot
from auditor.store import Store, canonical_json, validate_name
from auditor.textutil import batch_from_texts
from auditor.types import AuditorError, Snapshot
from tests.fakes import FakeEncoder, fake_snapshot


def _texts(start: int, n: int) -> list[str]:
    topics = ["cooking pasta", "tax law", "python loops", "poetry meter", "rocket engines"]
    return [
        f"record {i}: a note about {topics[i % len(topics)]} number {i * 7 % 13}"
        for i in range(start, start + n)
    ]


def _snap(start: int, n: int = 120) -> Snapshot:
    return fake_snapshot(batch_from_texts(_texts(start, n)))


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nits") / "store"
    store = Store.create(root)
    parent = None
    for t in range(3):
        store.add_snapshot(_snap(40 * t), f"r{t}", parent=parent)
        parent = f"r{t}"
    return root


@pytest.fixture()
def copy(chain: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(chain, dst)
    return dst


def _data(tmp_path: Path) -> Path:
    p = tmp_path / "round.jsonl"
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts(0, 30)), encoding="utf-8")
    return p


def _cli(*args: str):  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from auditor.cli import app

    return CliRunner().invoke(app, list(args))


# --------------------------------------------------------------------------------------
# names


@pytest.mark.parametrize("name", ["r1\n", "r1\n\n", "../x", "a/b", "", ".hidden", "x" * 129, "r\x001"])
def test_bad_names_are_refused_whole(name: str) -> None:
    with pytest.raises(AuditorError, match="not a valid snapshot name"):
        validate_name(name)


def test_a_trailing_newline_name_is_refused_by_the_store(copy: Path) -> None:
    """Attack: `--name $'r1\\n'` was accepted (the regex's `$` matches before a newline)."""
    store = Store.open(copy)
    with pytest.raises(AuditorError, match="not a valid snapshot name"):
        store.add_snapshot(_snap(500, 30), "r9\n", parent="r2")
    with pytest.raises(AuditorError, match="--parent"):
        store.add_snapshot(_snap(500, 30), "r9", parent="r2\n")
    assert store.names() == ["r0", "r1", "r2"] and store.verify() == []


@pytest.mark.parametrize("name", ["../x", "r1\n"])
def test_refused_names_cost_no_embedding_and_create_nothing(tmp_path: Path, name: str) -> None:
    """Attack: `--name ../x` was refused only after embedding, leaving an empty store."""
    enc = FakeEncoder()
    with pytest.raises(AuditorError, match="not a valid snapshot name"):
        snapshot(_data(tmp_path), tmp_path / "rounds", name, encoder=enc, cache_dir=None)
    assert enc.calls == 0
    assert not (tmp_path / "rounds").exists() and not (tmp_path / "x").exists()


def test_cli_snapshot_refuses_before_creating_the_store(tmp_path: Path) -> None:
    res = _cli("snapshot", str(_data(tmp_path)), "--store", str(tmp_path / "rounds"), "--name", "../x")
    assert isinstance(res.exception, AuditorError) and "not a valid snapshot name" in str(res.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round.jsonl"]


def test_a_missing_parent_in_a_new_store_creates_nothing(tmp_path: Path) -> None:
    enc = FakeEncoder()
    with pytest.raises(AuditorError, match="no snapshot named 'r0'"):
        snapshot(_data(tmp_path), tmp_path / "rounds", "r1", parent="r0", encoder=enc, cache_dir=None)
    assert enc.calls == 0 and not (tmp_path / "rounds").exists()


def test_curation_snapshot_records_a_round(tmp_path: Path) -> None:
    m = snapshot(_data(tmp_path), tmp_path / "rounds", "r0", encoder=FakeEncoder(), cache_dir=None, basis_k=3)
    assert m.name == "r0" and m.n_records == 30
    assert Store.open(tmp_path / "rounds").verify() == []


# --------------------------------------------------------------------------------------
# a re-parented head, against a pinned head


def _reparent_head(root: Path) -> None:
    """Point the head round r2 at r0 (with r0's real hash) and fix up the index."""
    r0 = hashlib.sha256((root / "snapshots" / "r0" / "manifest.json").read_bytes()).hexdigest()
    path = root / "snapshots" / "r2" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["parent"], manifest["parent_manifest_sha256"] = "r0", r0
    path.write_bytes(canonical_json(manifest))
    index = json.loads((root / "store.json").read_text())
    index["snapshots"][2]["manifest_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (root / "store.json").write_bytes(canonical_json(index))


def test_reparented_head_verifies_without_a_pin_but_not_against_one(copy: Path) -> None:
    pinned = Store.open(copy).head()
    assert pinned is not None
    _reparent_head(copy)
    store = Store.open(copy)
    # the attack: the chain alone is self-consistent (what the README now says)
    assert store.verify() == []
    assert store.manifest("r2").parent == "r0"
    problems = store.verify(head=pinned)
    assert problems and "pinned head manifest" in problems[0].message
    assert "re-parented" in problems[0].message


def test_cut_off_newest_round_fails_against_the_pin(copy: Path) -> None:
    pinned = Store.open(copy).head()
    assert pinned is not None
    index = json.loads((copy / "store.json").read_text())
    index["snapshots"] = index["snapshots"][:2]
    (copy / "store.json").write_bytes(canonical_json(index))
    shutil.rmtree(copy / "snapshots" / "r2")
    assert Store.open(copy).verify() == []
    assert Store.open(copy).verify(head=pinned)


def test_rounds_appended_after_the_pin_are_fine(copy: Path) -> None:
    store = Store.open(copy)
    pinned = store.head()
    assert pinned is not None
    store.add_snapshot(_snap(300, 60), "r3", parent="r2")
    assert store.verify(head=pinned) == [] and store.pinned_position(pinned) == 2
    result = history(copy, head=pinned, n_permutations=99)
    assert result.verified and result.after_pinned == 1 and len(result.rows) == 4


def test_cli_history_verify_head(copy: Path) -> None:
    pinned = Store.open(copy).head()
    assert pinned is not None
    res = _cli("history", "--store", str(copy), "--verify", "--head", pinned, "--permutations", "99")
    assert res.exit_code == 0, res.output
    _reparent_head(copy)
    res = _cli("history", "--store", str(copy), "--verify", "--permutations", "99")
    assert res.exit_code == 0, res.output  # without the pin the rewrite is invisible
    res = _cli("history", "--store", str(copy), "--verify", "--head", pinned.upper())
    assert res.exit_code == 1
    assert "pinned head manifest" in res.output


def test_a_malformed_head_is_a_usage_error(copy: Path) -> None:
    with pytest.raises(AuditorError, match="--head: 'abc' is not a sha256"):
        Store.open(copy).verify(head="abc")
    res = _cli("history", "--store", str(copy), "--verify", "--head", "abc")
    assert isinstance(res.exception, AuditorError)
