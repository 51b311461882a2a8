"""The snapshot store: round trip, tamper detection, crash safety, concurrent writers."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from auditor.store import Store, canonical_json, sha256_file
from auditor.textutil import batch_from_texts
from auditor.types import AuditorError, ModelInfo, Snapshot
from tests.fakes import FakeEncoder, fake_snapshot
from tests.helpers import data

REPO = Path(__file__).resolve().parents[1]


def _texts(start: int, n: int) -> list[str]:
    topics = ["cooking pasta", "tax law", "python loops", "poetry meter", "rocket engines", "chess openings"]
    return [
        f"record {i}: a note about {topics[i % len(topics)]} number {i * 7 % 13}"
        for i in range(start, start + n)
    ]


def _snap(start: int, n: int = 200, **kw: object) -> Snapshot:
    return fake_snapshot(batch_from_texts(_texts(start, n), **kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def chain_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """r0 -> r1 -> r2 -> r3, each replacing 50 of its parent's 200 records."""
    root = tmp_path_factory.mktemp("chain") / "store"
    store = Store.create(root)
    parent = None
    for t in range(4):
        store.add_snapshot(_snap(50 * t), f"r{t}", parent=parent)
        parent = f"r{t}"
    assert store.verify() == []
    return root


@pytest.fixture()
def store_copy(chain_store: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(chain_store, dst)
    return dst


# --------------------------------------------------------------------------------------
# round trip and format


def test_round_trip_restores_the_snapshot_exactly(tmp_path: Path) -> None:
    texts = _texts(0, 120)
    batch = batch_from_texts(
        texts,
        ids=[f"id-{i}" for i in range(120)],
        path="round1.jsonl",
        prompts=[t.split(":")[0] for t in texts],
        responses=[t.split(":")[1] for t in texts],
    )
    snap = fake_snapshot(batch, views=("prompt", "response"))
    store = Store.create(tmp_path / "s")
    m = store.add_snapshot(snap, "round1", basis_k=5, seed=3)
    back = Store.open(tmp_path / "s").load("round1")

    assert back.batch == snap.batch
    assert np.array_equal(back.embeddings, snap.embeddings)
    assert back.embeddings.dtype == np.float32
    assert back.model.sha256 == snap.model.sha256 and back.model.dim == snap.model.dim
    assert set(back.views) == {"prompt", "response"}
    for v in back.views:
        assert np.array_equal(back.views[v], snap.views[v])
    assert m.n_records == 120 and sum(m.cluster_counts) == 120 and len(m.cluster_counts) == 5
    assert m.parent is None and m.parent_manifest_sha256 is None and m.seq == 0


def test_files_are_plain_documented_formats(chain_store: Path) -> None:
    d = chain_store / "snapshots" / "r1"
    manifest = json.loads((d / "manifest.json").read_text())
    assert set(manifest) >= {
        "name",
        "created",
        "input",
        "model",
        "parent",
        "parent_manifest_sha256",
        "files",
        "cluster_counts",
        "schema_version",
    }
    assert manifest["input"]["n_records"] == 200 and len(manifest["input"]["sha256"]) == 64
    assert manifest["parent"] == "r0"
    r0_raw = (chain_store / "snapshots" / "r0" / "manifest.json").read_bytes()
    import hashlib

    assert manifest["parent_manifest_sha256"] == hashlib.sha256(r0_raw).hexdigest()
    for fname, digest in manifest["files"].items():
        assert sha256_file(d / fname) == digest
    emb = np.load(d / "embeddings.npy", allow_pickle=False)
    rec = pl.read_parquet(d / "records.parquet")
    assert emb.shape == (200, 64) and emb.dtype == np.float32
    assert rec.columns[:5] == ["id", "hash", "text", "line", "cluster"]
    assert rec.height == 200
    counts = np.bincount(rec["cluster"].to_numpy(), minlength=len(manifest["cluster_counts"]))
    assert counts.tolist() == manifest["cluster_counts"]
    basis = np.load(chain_store / "basis" / "centroids.npy", allow_pickle=False)
    assert basis.shape[1] == 64
    index = json.loads((chain_store / "store.json").read_text())
    assert [e["name"] for e in index["snapshots"]] == ["r0", "r1", "r2", "r3"]
    # the manifest bytes are the canonical JSON of their content: re-serialising is a no-op
    assert canonical_json(manifest) == (d / "manifest.json").read_bytes()


def test_names_chain_and_head(chain_store: Path) -> None:
    store = Store.open(chain_store)
    assert store.names() == ["r0", "r1", "r2", "r3"]
    assert [m.name for m in store.chain()] == ["r0", "r1", "r2", "r3"]
    assert [m.name for m in store.chain("r1")] == ["r0", "r1"]
    assert store.head() == store.manifest("r3").sha256


def test_later_rounds_use_the_first_rounds_basis(chain_store: Path) -> None:
    store = Store.open(chain_store)
    basis = store.basis()
    assert basis is not None
    r2 = store.load("r2")
    assert np.array_equal(store.clusters("r2"), store.assign(r2.embeddings, basis))
    index = json.loads((chain_store / "store.json").read_text())
    assert index["basis"]["from_snapshot"] == "r0"


def test_bad_requests_are_clear_errors(store_copy: Path) -> None:
    store = Store.open(store_copy)
    with pytest.raises(AuditorError, match="already exists"):
        store.add_snapshot(_snap(0, 50), "r1")
    with pytest.raises(AuditorError, match="no snapshot named 'nope'"):
        store.add_snapshot(_snap(0, 50), "r9", parent="nope")
    with pytest.raises(AuditorError, match="not a valid snapshot name"):
        store.add_snapshot(_snap(0, 50), "../evil")
    other = fake_snapshot(batch_from_texts(_texts(0, 50)), FakeEncoder(dim=32))
    with pytest.raises(AuditorError, match="one model"):
        store.add_snapshot(other, "r9")
    with pytest.raises(AuditorError, match="no snapshot named"):
        store.load("r9")
    with pytest.raises(AuditorError, match="not an auditor store"):
        Store.open(store_copy / "snapshots")
    assert store.names() == ["r0", "r1", "r2", "r3"] and store.verify() == []


# --------------------------------------------------------------------------------------
# tampering


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    offset = offset if offset >= 0 else len(data) + offset
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _first(store_dir: Path) -> tuple[str | None, str | None]:
    problems = Store.open(store_dir).verify()
    assert problems, "tampering went undetected"
    return problems[0].snapshot, problems[0].file


def test_flipped_manifest_byte_is_detected(store_copy: Path) -> None:
    path = store_copy / "snapshots" / "r1" / "manifest.json"
    raw = path.read_bytes()
    # change one digit of the record count: still valid JSON, different meaning
    pos = raw.index(b'"n_records": 200') + len(b'"n_records": ')
    path.write_bytes(raw[:pos] + b"1" + raw[pos + 1 :])
    assert _first(store_copy) == ("r1", "snapshots/r1/manifest.json")
    with pytest.raises(AuditorError, match="altered"):
        Store.open(store_copy).load("r1")


@pytest.mark.parametrize("fname", ["embeddings.npy", "records.parquet"])
@pytest.mark.parametrize("where", [0.5, -1])
def test_flipped_data_byte_is_detected(store_copy: Path, fname: str, where: float) -> None:
    path = store_copy / "snapshots" / "r2" / fname
    _flip(path, int(path.stat().st_size * where) if where > 0 else -1)
    assert _first(store_copy) == ("r2", f"snapshots/r2/{fname}")
    with pytest.raises(AuditorError, match="altered"):
        Store.open(store_copy).load("r2")


def test_flipped_basis_byte_is_detected(store_copy: Path) -> None:
    _flip(store_copy / "basis" / "centroids.npy", -3)
    assert _first(store_copy) == (None, "basis/centroids.npy")


def test_removed_file_is_detected(store_copy: Path) -> None:
    (store_copy / "snapshots" / "r1" / "records.parquet").unlink()
    snapshot, file = _first(store_copy)
    assert (snapshot, file) == ("r1", "snapshots/r1/records.parquet")
    assert "missing" in str(Store.open(store_copy).verify()[0])


def test_removed_snapshot_directory_is_detected(store_copy: Path) -> None:
    shutil.rmtree(store_copy / "snapshots" / "r2")
    assert _first(store_copy) == ("r2", "snapshots/r2")


def test_added_file_is_detected(store_copy: Path) -> None:
    (store_copy / "snapshots" / "r0" / "view-extra.npy").write_bytes(b"x")
    assert _first(store_copy) == ("r0", "snapshots/r0/view-extra.npy")


def _rewrite_index(store_dir: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = store_dir / "store.json"
    index = json.loads(path.read_text())
    edit(index)
    path.write_bytes(canonical_json(index))


def test_swapped_index_order_is_detected(store_copy: Path) -> None:
    def swap(index: dict) -> None:  # type: ignore[type-arg]
        s = index["snapshots"]
        s[1], s[2] = s[2], s[1]

    _rewrite_index(store_copy, swap)
    snapshot, file = _first(store_copy)
    assert (snapshot, file) == ("r2", "snapshots/r2/manifest.json")
    assert "re-ordered" in str(Store.open(store_copy).verify()[0])


def test_swapped_snapshot_directories_are_detected(store_copy: Path) -> None:
    snaps = store_copy / "snapshots"
    os.rename(snaps / "r1", snaps / "tmp-swap")
    os.rename(snaps / "r2", snaps / "r1")
    os.rename(snaps / "tmp-swap", snaps / "r2")
    assert _first(store_copy) == ("r1", "snapshots/r1/manifest.json")


def test_snapshot_dropped_from_the_index_is_detected(store_copy: Path) -> None:
    _rewrite_index(store_copy, lambda index: index["snapshots"].pop(1))
    # r1 is gone from the chain: r2 no longer follows the manifest it was created after
    assert _first(store_copy) == ("r2", "snapshots/r2/manifest.json")


def test_rewritten_history_with_fixed_up_index_is_detected(store_copy: Path) -> None:
    """An editor who rewrites r1 (re-parenting it and changing its input hash) and then
    fixes the index's hash for r1 still breaks r2, which holds r1's original hash."""
    path = store_copy / "snapshots" / "r1" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["input"]["sha256"] = "0" * 64
    path.write_bytes(canonical_json(manifest))
    import hashlib

    new = hashlib.sha256(path.read_bytes()).hexdigest()

    def fix(index: dict) -> None:  # type: ignore[type-arg]
        index["snapshots"][1]["manifest_sha256"] = new

    _rewrite_index(store_copy, fix)
    problems = Store.open(store_copy).verify()
    assert problems and problems[0].snapshot == "r2"
    assert {"parent hash", "previous-snapshot hash"} <= {
        "parent hash" if "parent hash" in p.message else "previous-snapshot hash" for p in problems
    }


def test_edited_parent_pointer_is_detected(store_copy: Path) -> None:
    path = store_copy / "snapshots" / "r2" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["parent"] = "r0"
    path.write_bytes(canonical_json(manifest))
    assert _first(store_copy) == ("r2", "snapshots/r2/manifest.json")


# --------------------------------------------------------------------------------------
# crashes and concurrency (real processes)

_WRITER = textwrap.dedent(
    """
    import sys
    from auditor.store import Store
    from auditor.textutil import batch_from_texts
    from tests.fakes import fake_snapshot
    root, name, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
    parent = sys.argv[4] if len(sys.argv) > 4 else None
    texts = [f"crash test record {i} on topic {i % 9}" for i in range(start, start + 300)]
    Store.create(root).add_snapshot(fake_snapshot(batch_from_texts(texts)), name, parent=parent)
    print("done", name, flush=True)
    """
)


def _spawn(args: list[str], slow: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AUDITOR_TEST_SLOW_WRITE": slow}
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_at(proc: subprocess.Popen[str], stage: str, extra_delay: float = 0.0) -> list[str]:
    """Read the writer's stage announcements until ``stage``, then SIGKILL it."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        if line.startswith("auditor-store-stage "):
            seen.append(line.split()[1])
            if seen[-1] == stage:
                break
    else:
        proc.wait(timeout=30)
        raise AssertionError(f"writer exited before stage {stage!r} (stages seen: {seen})")
    if extra_delay:
        time.sleep(extra_delay)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    return seen


@pytest.mark.parametrize(
    "stage", ["locked", "embeddings-written", "manifest-written", "renamed", "index-written"]
)
def test_sigkill_mid_snapshot_leaves_the_store_valid(chain_store: Path, tmp_path: Path, stage: str) -> None:
    root = tmp_path / "store"
    shutil.copytree(chain_store, root)
    proc = _spawn([str(root), "partial", "1000", "r3"], f"60@{stage}")
    _kill_at(proc, stage)

    store = Store.open(root)
    assert store.names() == ["r0", "r1", "r2", "r3"]
    assert store.verify() == []
    # the next writer sweeps the debris and can reuse the name
    m = store.add_snapshot(_snap(2000, 100), "partial", parent="r3")
    assert store.names()[-1] == "partial" and m.seq == 4
    assert store.verify() == []
    assert list((root / "tmp").iterdir()) == []


def test_sigkill_while_writing_the_first_snapshot(tmp_path: Path) -> None:
    root = tmp_path / "store"
    proc = _spawn([str(root), "first", "0"], "60@basis-written")
    _kill_at(proc, "basis-written")
    store = Store.open(root)
    assert store.names() == [] and store.verify() == []
    store.add_snapshot(_snap(0, 100), "first")
    assert store.names() == ["first"] and store.verify() == []


def test_sigkill_at_random_moments(chain_store: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    root = tmp_path / "store"
    shutil.copytree(chain_store, root)
    for attempt in range(3):
        proc = _spawn([str(root), f"rand{attempt}", str(5000 + 300 * attempt)], "0.02")
        _kill_at(proc, "locked", extra_delay=float(rng.uniform(0.0, 0.2)))
        store = Store.open(root)
        assert store.verify() == []
        names = store.names()
        # either the write committed completely or it is not there at all
        assert names[:4] == ["r0", "r1", "r2", "r3"]
        assert set(names[4:]) <= {f"rand{i}" for i in range(attempt + 1)}
        for n in names[4:]:
            assert len(store.load(n)) == 300


def _wait_for(proc: subprocess.Popen[str], stage: str) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.strip() == f"auditor-store-stage {stage}":
            return
    raise AssertionError(f"writer exited before stage {stage!r}: rc={proc.wait(timeout=30)}")


def test_two_writers_at_once_both_commit(chain_store: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"
    shutil.copytree(chain_store, root)
    # Hold the lock here until both writers are blocked on it, then let them race: both
    # are mid-write at the same moment, whatever the machine's load.
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        procs = [
            _spawn([str(root), f"w{i}", str(3000 + 500 * i), "r3"], "0.3@manifest-written") for i in range(2)
        ]
        for p in procs:
            _wait_for(p, "lock-wait")
    finally:
        os.close(fd)
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.startswith("done")
    store = Store.open(root)
    assert sorted(store.names()[4:]) == ["w0", "w1"]
    assert store.verify() == []
    ms = [store.manifest(n) for n in store.names()]
    assert [m.seq for m in ms] == list(range(6))
    assert ms[5].previous_manifest_sha256 == ms[4].sha256
    assert len(store.load("w0")) == len(store.load("w1")) == 300


def test_lock_timeout_is_a_clear_error(store_copy: Path) -> None:
    fd = os.open(store_copy / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        store = Store(store_copy, lock_timeout=0.3)
        with pytest.raises(AuditorError, match=r"\.lock: another process is writing"):
            store.add_snapshot(_snap(0, 50), "blocked")
    finally:
        os.close(fd)
    assert Store.open(store_copy).names() == ["r0", "r1", "r2", "r3"]


# --------------------------------------------------------------------------------------
# real data


def test_snapshot_of_real_data_round_trips(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in data("self_instruct_seed_tasks.jsonl").read_text().splitlines()]
    texts = [r["instruction"] + "\n" + r["instances"][0]["input"] for r in rows]
    batch = batch_from_texts(
        texts, ids=[r["id"] for r in rows], path=str(data("self_instruct_seed_tasks.jsonl"))
    )
    snap = fake_snapshot(batch)
    store = Store.create(tmp_path / "s")
    m = store.add_snapshot(snap, "seed")
    # data() may serve the file under its sample_data/ name: compare with the path given
    assert m.n_records == 175 and m.input["path"] == str(data("self_instruct_seed_tasks.jsonl"))
    back = store.load("seed")
    assert back.ids == batch.ids and back.texts == batch.texts
    assert store.verify() == []


def test_model_info_round_trips_through_manifest(chain_store: Path) -> None:
    m = Store.open(chain_store).manifest("r0")
    assert m.model == ModelInfo(name="fake-hashing-encoder", sha256=FakeEncoder().fingerprint, dim=64)
