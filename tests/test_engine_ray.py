"""The Ray engine gives the local engine's findings, on a local Ray and on a simulated
two-node cluster; it embeds only what the cache lacks and refuses a worker whose model
differs from the driver's."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from auditor import planted
from auditor.api import run_audit
from auditor.cache import EmbeddingCache
from auditor.types import AuditorError, Report
from tests.fakes import FakeEncoder
from tests.helpers import ROOT, alpaca_records

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

# workers import tests.fakes (the pickled fake encoder) from this checkout
_ENV = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), *[p for p in sys.path if p]])}}
_QUIET = {"include_dashboard": False, "log_to_driver": False, "runtime_env": _ENV}


@pytest.fixture(scope="module", params=["local", "two-node"])
def cluster(request: pytest.FixtureRequest) -> Iterator[str]:
    """One Ray per parameter for the whole module (start-up costs seconds)."""
    if request.param == "local":
        ray.init(num_cpus=2, **_QUIET)
        yield "local"
        ray.shutdown()
        return
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, **_QUIET)
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        yield "two-node"
    finally:
        ray.shutdown()
        c.shutdown()


def _key(report: Report) -> list[tuple[str, str, tuple[str, ...]]]:
    return sorted((f.check, f.severity, f.record_ids) for f in report.findings)


def _pvalues(report: Report) -> dict[tuple[str, tuple[str, ...]], float | None]:
    return {(f.check, f.record_ids): f.p_value for f in report.findings}


def test_same_findings_as_local_engine(cluster: str, tmp_path: Path) -> None:
    pool = planted.records_from_alpaca(alpaca_records()[:1600])
    sc = planted.near_duplicates(pool, seed=3, n=600, groups=3, copies=12)
    enc = FakeEncoder()
    local = run_audit(sc.current, sc.reference, encoder=enc, cache_dir=tmp_path / "local", seed=1)
    calls = enc.calls
    distributed = run_audit(
        sc.current, sc.reference, encoder=enc, cache_dir=tmp_path / "ray", seed=1, engine="ray"
    )
    # the driver's encoder only re-embedded the spot-check sample: the cluster did the rest
    assert enc.calls - calls <= 2 * 16 * 3
    assert local.report.findings, "the planted duplicates must give findings to compare"
    assert _key(distributed.report) == _key(local.report)
    lp, dp = _pvalues(local.report), _pvalues(distributed.report)
    for k, p in lp.items():
        q = dp[k]
        assert (p is None and q is None) or abs(float(p) - float(q)) <= 1e-9  # type: ignore[arg-type]
    assert distributed.report.exit_code == local.report.exit_code
    np.testing.assert_array_equal(distributed.current.embeddings, local.current.embeddings)
    planted_dups = [f for f in local.report.findings if set(f.record_ids) & sc.planted_ids]
    assert planted_dups, "the planted near-duplicates are among the findings"


def test_embed_file_is_resumable_and_matches_local(cluster: str, tmp_path: Path) -> None:
    from auditor.engine.ray_engine import RayEngine
    from auditor.io import load

    src = ROOT / "sample_data" / "alpaca_sample.jsonl"
    enc = FakeEncoder()
    cache = EmbeddingCache(tmp_path / "c", key=b"k" * 32)
    with RayEngine() as eng:
        first = eng.embed_file(src, enc, cache, chunk=100)
        again = eng.embed_file(src, enc, EmbeddingCache(tmp_path / "c", key=b"k" * 32), chunk=100)
    batch = load(src)
    assert first.n_records == len(batch) and first.n_unique == len(set(batch.hashes))
    assert first.n_encoded == first.n_unique and first.n_cached == 0
    assert again.n_encoded == 0 and again.n_cached == first.n_unique  # nothing re-embedded
    got, found = EmbeddingCache(tmp_path / "c", key=b"k" * 32).get(enc.fingerprint, batch.hashes, enc.dim)
    assert found.all()
    np.testing.assert_allclose(got, FakeEncoder().encode(list(batch.texts)), atol=1e-6)


class _OtherModel(FakeEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.fingerprint = "0" * 64


def _other() -> FakeEncoder:
    return _OtherModel()


def test_worker_with_another_model_is_refused(cluster: str, tmp_path: Path) -> None:
    from auditor.engine.ray_engine import RayEngine

    enc = FakeEncoder()
    with RayEngine() as eng, pytest.raises(AuditorError, match="expected the same model files on every node"):
        eng.fill_cache(
            ["a text", "another"],
            ["1" * 64, "2" * 64],
            enc,
            EmbeddingCache(tmp_path, key=b"k" * 32),
            factory=_other,
        )
    assert not EmbeddingCache(tmp_path, key=b"k" * 32).contains(enc.fingerprint, ["1" * 64]).any()


def test_engine_options_are_checked_before_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from auditor import cli

    cur = str(ROOT / "sample_data" / "alpaca_sample.jsonl")
    for argv, msg in (
        (["audit", cur, "-r", cur, "--out", str(tmp_path / "o"), "--engine", "spark"], "unknown engine"),
        (["embed", cur, "--ray-address", "10.0.0.1:6379"], "only used with --engine ray"),
    ):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err


def test_minhash_pass_on_ray_equals_local(cluster: str) -> None:
    from auditor.checks.duplicates import near_duplicate_edges
    from auditor.engine import _LSH
    from auditor.engine.aggregate import RayPasses

    pool = planted.records_from_alpaca(alpaca_records()[:900])
    sc = planted.near_duplicates(pool, seed=4, n=300, groups=3, copies=10)
    texts = [*sc.current.texts, *sc.reference.texts]
    emb = FakeEncoder().encode(texts)
    local = near_duplicate_edges(emb, texts, cosine_threshold=0.5, jaccard_threshold=0.5, seed=2)
    with RayPasses(shard=128) as backend:  # several map tasks, spread over both nodes
        token = _LSH.set(backend.lsh)
        try:
            remote = near_duplicate_edges(emb, texts, cosine_threshold=0.5, jaccard_threshold=0.5, seed=2)
        finally:
            _LSH.reset(token)
    (call,) = backend.stats.calls
    assert call["records"] == len(texts) and call["shards"] == -(-len(texts) // 128) > 1
    assert local[0].size > 0, "the planted near-duplicates must give edges"
    for a, b in zip(local, remote):
        np.testing.assert_array_equal(a, b)


def _assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The local engine's assignment (auditor.index.kmeans): one faiss search of every row."""
    from auditor import index

    ix = index.faiss.IndexFlatIP(centroids.shape[1])
    ix.add(centroids)
    return ix.search(index.normalize(x), 1)[1][:, 0].astype(np.int64)


def test_counting_passes_on_ray_equal_local(cluster: str) -> None:
    from auditor import index
    from auditor.checks.lexical import _record_words
    from auditor.checks.triggers import count_ngrams
    from auditor.engine.aggregate import RayPasses
    from auditor.kernels import permutation_values

    pool = planted.records_from_alpaca(alpaca_records()[:700])
    sc = planted.trigger(pool, 0.05, seed=6, n=300)
    texts = [*sc.reference.texts, *sc.current.texts]
    want = count_ngrams(texts, 4, 5)
    local_words: dict[str, list[int]] = {}
    for d, ws in enumerate(_record_words(texts)):
        for w in ws:
            local_words.setdefault(w, []).append(d)
    emb = FakeEncoder().encode(texts)
    x, y = emb[:300], emb[300:]
    want_rff = permutation_values(
        x, y, permutations=199, bandwidth=1.0, rng=np.random.default_rng(3), method="rff", features=128
    )
    with RayPasses(shard=97) as backend:  # several map tasks, spread over both nodes
        words, gram_tokens, pair_gram, pair_doc, df = backend.ngrams(texts, max_n=4, min_count=5)
        carriers = backend.carriers(texts, _record_words, min_records=3)
        rff = backend.rff(x, y, permutations=199, bandwidth=1.0, rng=np.random.default_rng(3), features=128)
        centroids = index.normalize(emb[::40])
        nearest = backend.nearest(index.normalize(emb), centroids)
        sims, nb = backend.knn(index.normalize(emb), index.normalize(emb[::2]), 6)  # type: ignore[misc]
    passes = ["ngrams", "word_carriers", "mmd_rff", "kmeans_assign", "knn"]
    assert [c["pass"] for c in backend.stats.calls] == passes
    assert all(c["shards"] > 1 for c in backend.stats.calls)
    assert words == want.words and len(df) == len(want.df) == 4 and int(want.df[3].sum()) > 0
    for got, exp in zip(
        (gram_tokens, pair_gram, pair_doc, df), (want.gram_tokens, want.pair_gram, want.pair_doc, want.df)
    ):
        for a, b in zip(got, exp):
            np.testing.assert_array_equal(a, b)
    assert carriers == {w: d for w, d in local_words.items() if len(d) >= 3}
    np.testing.assert_allclose(rff, want_rff, rtol=1e-5)
    np.testing.assert_array_equal(nearest, _assign(emb, centroids))
    want_sims, want_nb = index.knn(emb, emb[::2], 6)  # no engine active here: the local search
    np.testing.assert_array_equal(nb, want_nb)
    np.testing.assert_allclose(sims, want_sims, rtol=0, atol=1e-6)


def test_audit_with_every_pass_on_ray_equals_local(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_audit on the Ray engine, with shards small enough that every distributed pass
    splits its work, gives the local engine's findings; mmd takes its random-feature path."""
    from auditor import enrichment
    from auditor.engine import aggregate
    from auditor.rules import DEFAULT_RULES_PATH

    rules = tmp_path / "rules.yaml"
    text = DEFAULT_RULES_PATH.read_text(encoding="utf-8")
    assert "max_per_side: 5000}" in text
    rules.write_text(
        text.replace("max_per_side: 5000}", "max_per_side: 100, features: 256}"), encoding="utf-8"
    )
    pool = planted.records_from_alpaca(alpaca_records()[:1000])
    sc = planted.trigger(pool, 0.04, seed=5, n=400)
    enc = FakeEncoder()
    local = run_audit(sc.current, sc.reference, encoder=enc, cache_dir=tmp_path / "c", seed=2, rules=rules)
    monkeypatch.setattr(aggregate, "SHARD", 150)
    # the local run's k-means partitions are memoised: forget them so the Ray run fits its own
    monkeypatch.setattr(enrichment, "_PARTITIONS", type(enrichment._PARTITIONS)())
    backends: list[aggregate.RayPasses] = []
    enter = aggregate.RayPasses.__enter__

    def spy(self: aggregate.RayPasses) -> aggregate.RayPasses:
        backends.append(self)
        return enter(self)

    monkeypatch.setattr(aggregate.RayPasses, "__enter__", spy)
    remote = run_audit(
        sc.current, sc.reference, encoder=enc, cache_dir=tmp_path / "c", seed=2, rules=rules, engine="ray"
    )
    (backend,) = backends
    ran = {c["pass"]: c for c in backend.stats.calls}
    assert {"ngrams", "word_carriers", "mmd_rff", "minhash_lsh", "kmeans_assign", "knn"} <= set(ran), ran
    assert all(c["shards"] > 1 for c in ran.values())
    mmd = [f for f in local.report.findings if f.check == "mmd"]
    assert mmd and mmd[0].details["method"] == "rff"
    assert any(f.check == "triggers" and set(f.record_ids) & sc.planted_ids for f in local.report.findings)
    assert _key(remote.report) == _key(local.report)
    lp, rp = _pvalues(local.report), _pvalues(remote.report)
    assert lp.keys() == rp.keys()
    for k, p in lp.items():
        q = rp[k]
        assert (p is None and q is None) or abs(float(p) - float(q)) <= 1e-9  # type: ignore[arg-type]
    assert remote.report.exit_code == local.report.exit_code


def test_worker_with_other_code_is_refused(cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from auditor.checks.lexical import _record_words
    from auditor.engine import aggregate

    real = aggregate.code_fingerprint()
    assert len(real) == 64
    monkeypatch.setattr(aggregate, "code_fingerprint", lambda: "0" * 64)  # the driver's "other" code
    texts = ["alpha bravo charlie", "alpha bravo delta"] * 3
    with aggregate.RayPasses(shard=2) as backend:
        with pytest.raises(
            AuditorError, match=f"auditor code {real[:12]}.*same auditor version on every node"
        ):
            backend.carriers(texts, _record_words, min_records=1)
        with pytest.raises(AuditorError, match="same auditor version on every node"):
            backend.lsh(texts, bands=4, rows=2, seed=0)


def test_ivf_candidate_search_on_ray_equals_local(cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from auditor import neighbours
    from auditor.engine import passes
    from tests.helpers import alpaca_minilm

    monkeypatch.setattr(neighbours, "IVF_MIN_BASE", 1000)  # the IVF plan at a test's size
    x = alpaca_minilm()[:2400]
    neighbours._CACHE.clear()
    want = neighbours.candidate_knn(x[:1800], x[600:], 5, proj_dim=None, seed=2)
    neighbours._CACHE.clear()
    try:
        with passes("ray", shard=97):
            got = neighbours.candidate_knn(x[:1800], x[600:], 5, proj_dim=None, seed=2)
    finally:
        neighbours._CACHE.clear()
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
