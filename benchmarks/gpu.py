"""GPU benchmarks: embedding throughput and kernel statistics on a CUDA device.

Run on a machine with a GPU (``python -m benchmarks.gpu --model DIR --data alpaca.json``);
writes ``--out``/gpu_results.json and prints a table.  Each figure is measured beside its
baseline in the same run:

- embedding: sentence-transformers' own ``SentenceTransformer.encode`` (its defaults, then
  fp16 and larger batches) against auditor's pipelined encoder (threaded Rust
  tokenisation, length-bucketed token-budget batches, fp16, pinned memory);
- MMD: a straightforward torch permutation MMD in the style of popular drift libraries
  (full n×n kernel matrix, then each permutation re-indexes it) against auditor's
  blockwise kernel (auditor/kernels.py), B=1000 permutations;
- power: the exact blockwise MMD on every record against random Fourier features on
  every record and an exact test on a 5,000-per-side subsample (what the CPU does above
  its size threshold), on planted topic shifts in real embeddings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS: dict[str, Any] = {}
OUT_DIR: Path | None = None
DEVICE = "cuda"  # --device cpu runs a small smoke test of this script without a GPU


def save(out: Path) -> None:
    (out / "gpu_results.json").write_text(json.dumps(RESULTS, indent=2, default=str))


def section(name: str, out: Path):  # type: ignore[no-untyped-def]
    def deco(fn):  # type: ignore[no-untyped-def]
        def run(*a, **k):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                RESULTS[name] = fn(*a, **k)
            except Exception as err:  # noqa: BLE001 - one failed section must not lose the others
                traceback.print_exc()
                RESULTS[name] = {"error": f"{type(err).__name__}: {err}"}
            RESULTS.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
            save(out)
            print(json.dumps(RESULTS[name], default=str)[:1500], flush=True)

        return run

    return deco


def sync() -> None:
    import torch

    if DEVICE != "cpu":
        torch.cuda.synchronize()


def reset_peak() -> None:
    import torch

    if DEVICE != "cpu":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib() -> int | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20) if DEVICE != "cpu" else None


def alpaca_texts(path: Path, n: int) -> list[str]:
    """Whole Alpaca records (instruction, input, output), as auditor.io joins them; beyond
    the 5,000 distinct records, copies get a numeric suffix so every text is distinct."""
    recs = json.loads(path.read_text(encoding="utf-8"))
    base = ["\n".join(p for p in (r["instruction"], r["input"], r["output"]) if p) for r in recs]
    return [base[i % len(base)] + ("" if i < len(base) else f"\n#{i}") for i in range(n)]


def environment() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if DEVICE != "cpu" else "none (smoke test)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    for mod in ("transformers", "sentence_transformers", "tokenizers"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as err:  # noqa: BLE001
            info[mod] = f"missing ({err})"
    return info


def bench_tokenizer(model_dir: Path, texts: list[str]) -> dict[str, Any]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(max_length=256)
    out = {}
    for name in ("encode_batch", "encode_batch_fast"):
        fn = getattr(tok, name, None)
        if fn is None:
            continue
        fn(texts[:2000])
        t0 = time.perf_counter()
        encs = fn(texts)
        dt = time.perf_counter() - t0
        out[name] = {
            "records_per_s": round(len(texts) / dt),
            "mean_tokens": float(np.mean([len(e) for e in encs])),
        }
    return out


ST_CONFIGS = ("defaults (batch 32)", "batch 256", "batch 1024", "fp16, batch 256", "fp32, batch 256")


def bench_st_baseline(model_dir: Path, texts: list[str], only: list[str] | None = None) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device=DEVICE)
    dtype = str(next(model.parameters()).dtype)
    res: dict[str, Any] = {"loaded_dtype": dtype, "runs": []}
    configs = [("defaults (batch 32)", None, 32), ("batch 256", None, 256), ("batch 1024", None, 1024)]
    for label, cast, bs in configs + [("fp16, batch 256", "half", 256), ("fp32, batch 256", "float", 256)]:
        if only and label not in only:
            continue
        if cast == "half":
            model.half()
        elif cast == "float":
            model.float()
        model.encode(texts[:1000], batch_size=bs)
        sync()
        t0 = time.perf_counter()
        model.encode(texts, batch_size=bs, convert_to_numpy=True, normalize_embeddings=True)
        sync()
        dt = time.perf_counter() - t0
        res["runs"].append(
            {
                "config": label,
                "dtype": str(next(model.parameters()).dtype),
                "records": len(texts),
                "seconds": round(dt, 2),
                "records_per_s": round(len(texts) / dt),
            }
        )
        print(res["runs"][-1], flush=True)
    model.float()
    ref = model.encode(texts[:3000], batch_size=256, convert_to_numpy=True, normalize_embeddings=True)
    np.save("/tmp/st_fp32_ref.npy", ref)
    del model
    reset_peak()
    return res


def bench_ours(model_dir: Path, texts: list[str], cache_root: Path, budgets: list[int]) -> dict[str, Any]:

    from auditor.cache import EmbeddingCache
    from auditor.embed import embed_texts
    from auditor.encoders import load_encoder
    from auditor.textutil import content_hash

    enc = load_encoder(model_dir, device=DEVICE)
    res: dict[str, Any] = {"backend": enc.backend, "device": enc.device, "runs": []}
    enc.encode(texts[:2000])
    for fp16 in (True, False):
        for budget in budgets if fp16 else [131072]:
            enc.fp16 = fp16
            enc._model = None
            enc.gpu_tokens_per_batch = budget
            enc.encode(texts[:2000])
            reset_peak()
            sync()
            t0 = time.perf_counter()
            emb = enc._encode_pipelined(texts) if DEVICE == "cpu" else enc.encode(texts)
            sync()
            dt = time.perf_counter() - t0
            run = {
                "fp16": fp16,
                "tokens_per_batch": budget,
                "records": len(texts),
                "seconds": round(dt, 2),
                "records_per_s": round(len(texts) / dt),
                "peak_gpu_mib": peak_mib(),
            }
            if os.path.exists("/tmp/st_fp32_ref.npy"):
                ref = np.load("/tmp/st_fp32_ref.npy")
                cos = (emb[: len(ref)] * ref).sum(1)
                run["cosine_to_st_fp32_min"] = float(cos.min())
                run["cosine_to_st_fp32_mean"] = float(cos.mean())
            res["runs"].append(run)
            print(run, flush=True)
            if fp16 and budget == 131072:
                np.save("/tmp/ours_emb.npy", emb)
    enc.fp16, enc._model, enc.gpu_tokens_per_batch = True, None, 262144
    enc.encode(texts[:2000])  # reload and warm up, as before the timed runs above
    # through the cache: cold (encode + write shards), then warm (read back)
    hashes = [content_hash(t) for t in texts]
    cache = EmbeddingCache(cache_root)
    t0 = time.perf_counter()
    embed_texts(texts, hashes, enc, cache)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, n = embed_texts(texts, hashes, enc, EmbeddingCache(cache_root))
    warm = time.perf_counter() - t0
    res["cache"] = {
        "records": len(texts),
        "cold_seconds": round(cold, 2),
        "cold_records_per_s": round(len(texts) / cold),
        "warm_seconds": round(warm, 2),
        "warm_records_per_s": round(len(texts) / warm),
        "warm_encoded": n,
    }
    return res


def naive_torch_mmd(x: Any, y: Any, permutations: int, seed: int = 0) -> tuple[float, float]:
    """A straightforward torch permutation MMD, as popular drift libraries write it: the
    full kernel matrix once, then for each permutation re-index it and recompute."""
    import torch

    z = torch.cat([x, y])
    n, nx = len(z), len(x)
    d2 = torch.cdist(z, z).pow(2)
    sigma2 = d2[torch.triu_indices(min(n, 2000), min(n, 2000), 1).unbind()].median()
    k = torch.exp(-d2 / (2 * sigma2))
    del d2

    def stat(kk: Any) -> Any:
        return kk[:nx, :nx].mean() + kk[nx:, nx:].mean() - 2 * kk[:nx, nx:].mean()

    observed = stat(k)
    g = torch.Generator(device=z.device).manual_seed(seed)
    count = 0
    for _ in range(permutations):
        idx = torch.randperm(n, device=z.device, generator=g)
        count += int(stat(k[idx][:, idx]) >= observed)
    return float(observed), (count + 1) / (permutations + 1)


def bench_mmd(emb: np.ndarray, sizes: list[int]) -> dict[str, Any]:
    import torch

    from auditor import kernels
    from auditor.checks.drift import mmd_permutation_test

    res: dict[str, Any] = {"ours": [], "baseline": [], "single_statistic": []}
    rng = np.random.default_rng(0)
    sd = 0.35 * 1.2 / np.sqrt(emb.shape[1])
    for per_side in sizes:
        # real embeddings, resampled with small noise when more points are needed than exist
        idx = rng.integers(len(emb), size=2 * per_side)
        z0 = emb[idx] + (
            rng.normal(scale=sd, size=(2 * per_side, emb.shape[1])) if 2 * per_side > len(emb) else 0
        )
        z0 = (z0 / np.linalg.norm(z0, axis=1, keepdims=True)).astype(np.float32)
        x, y = z0[:per_side], z0[per_side:]
        # one statistic, no permutations (the 17 ms / 1.5 s reference figures)
        z = np.concatenate([x, y])
        w = kernels.label_weights(per_side, per_side, 0, rng)
        kernels.mmd_null_exact(z[:4096], w[:4096], 1.0, device=DEVICE)
        sync()
        t0 = time.perf_counter()
        kernels.mmd_null_exact(z, w, 1.0, device=DEVICE, block=8192)
        sync()
        res["single_statistic"].append({"per_side": per_side, "seconds": round(time.perf_counter() - t0, 3)})
        for tf32 in (False, True) if per_side >= 50000 else (False,):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            reset_peak()
            sync()
            t0 = time.perf_counter()
            stat, p, bw, _ = mmd_permutation_test(x, y, permutations=1000, seed=1, device=DEVICE, block=8192)
            sync()
            res["ours"].append(
                {
                    "per_side": per_side,
                    "permutations": 1000,
                    "tf32": tf32,
                    "seconds": round(time.perf_counter() - t0, 2),
                    "peak_gpu_mib": peak_mib(),
                    "mmd2": stat,
                    "p": p,
                }
            )
            print(res["ours"][-1], flush=True)
        torch.backends.cuda.matmul.allow_tf32 = False
        # the baseline, same B, same data
        reset_peak()
        xt = yt = None
        try:
            xt, yt = torch.from_numpy(x).to(DEVICE), torch.from_numpy(y).to(DEVICE)
            sync()
            t0 = time.perf_counter()
            stat_b, p_b = naive_torch_mmd(xt, yt, 1000)
            sync()
            res["baseline"].append(
                {
                    "per_side": per_side,
                    "permutations": 1000,
                    "seconds": round(time.perf_counter() - t0, 2),
                    "peak_gpu_mib": peak_mib(),
                    "mmd2": stat_b,
                    "p": p_b,
                }
            )
        except torch.cuda.OutOfMemoryError as err:
            res["baseline"].append(
                {"per_side": per_side, "permutations": 1000, "error": f"out of GPU memory ({err})"[:200]}
            )
        finally:
            xt = yt = None
            reset_peak()
        print(res["baseline"][-1], flush=True)
    return res


def planted_topic(
    emb: np.ndarray, per_side: int, frac: float, topic: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current of ``per_side`` records each, built from real embeddings plus
    small isotropic noise (so records are distinct); ``frac`` of the current records are
    drawn from one topic cluster instead of from everywhere."""
    noise = (
        0.35 * np.median(np.linalg.norm(emb[:500, None] - emb[None, :500], axis=-1)) / np.sqrt(emb.shape[1])
    )

    def draw(pool: np.ndarray, k: int) -> np.ndarray:
        v = pool[rng.integers(len(pool), size=k)] + rng.normal(scale=noise, size=(k, emb.shape[1])).astype(
            np.float32
        )
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    ref = draw(emb, per_side)
    k_topic = int(round(frac * per_side))
    cur = np.concatenate([draw(emb, per_side - k_topic), draw(emb[topic], k_topic)])
    return ref, cur


def bench_power(emb: np.ndarray, reps: int, per_side: int, fractions: list[float]) -> dict[str, Any]:
    from sklearn.cluster import KMeans

    from auditor.checks.drift import mmd_permutation_test

    base = emb[:5000]
    labels = KMeans(n_clusters=50, n_init=1, random_state=0).fit_predict(base)
    topic = np.flatnonzero(labels == np.bincount(labels).argmax())
    rng = np.random.default_rng(0)
    sub = min(5000, per_side // 2)
    methods: dict[str, dict[str, Any]] = {
        f"exact, all {per_side} per side": dict(method="exact"),
        f"random features D=1024, all {per_side}": dict(method="rff", features=1024),
        f"random features D=4096, all {per_side}": dict(method="rff", features=4096),
        f"exact, {sub}-per-side subsample": dict(method="exact", sub=sub),
    }
    out: dict[str, Any] = {"per_side": per_side, "reps": reps, "alpha": 0.01, "permutations": 200}
    out["topic_size"] = int(len(topic))
    out["rows"] = []
    for frac in fractions:
        row: dict[str, Any] = {"planted_fraction": frac}
        pvals: dict[str, list[float]] = {m: [] for m in methods}
        t0 = time.perf_counter()
        for r in range(reps):
            ref, cur = planted_topic(base, per_side, frac, topic, rng)
            for name, kw in methods.items():
                kw = dict(kw)
                n_sub = kw.pop("sub", None)
                x, y = ref, cur
                if n_sub:
                    x = ref[rng.choice(per_side, n_sub, replace=False)]
                    y = cur[rng.choice(per_side, n_sub, replace=False)]
                _, p, _, _ = mmd_permutation_test(
                    x, y, permutations=200, seed=r, device=DEVICE, block=8192, **kw
                )
                pvals[name].append(p)
        for name, ps in pvals.items():
            row[name] = float(np.mean(np.array(ps) <= 0.01))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        out["rows"].append(row)
        print(row, flush=True)
        RESULTS["power_partial"] = out  # a run cut short keeps the rows it finished
        if OUT_DIR is not None:
            save(OUT_DIR)
    RESULTS.pop("power_partial", None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="sentence-transformers model directory")
    ap.add_argument("--data", type=Path, required=True, help="alpaca_5000.json")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/out")))
    ap.add_argument("--records", type=int, default=100000)
    ap.add_argument("--baseline-records", type=int, default=50000)
    ap.add_argument("--power-reps", type=int, default=20)
    ap.add_argument("--power-per-side", type=int, default=50000)
    ap.add_argument("--fractions", type=float, nargs="*", default=[0.0, 0.002, 0.005, 0.01])
    ap.add_argument("--mmd-sizes", type=int, nargs="*", default=[10000, 50000, 100000])
    ap.add_argument("--device", default="cuda", help="cuda; cpu runs a small smoke test")
    ap.add_argument("--st-configs", nargs="*", default=None, help=f"subset of {ST_CONFIGS}")
    ap.add_argument("--budgets", type=int, nargs="*", default=[32768, 65536, 131072, 262144])
    ap.add_argument("--skip", nargs="*", default=[])
    args = ap.parse_args()
    global DEVICE, OUT_DIR
    DEVICE = args.device
    OUT_DIR = args.out
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    texts = alpaca_texts(args.data, args.records)
    section("environment", args.out)(environment)()
    if "tokenizer" not in args.skip:
        section("tokenizer", args.out)(bench_tokenizer)(args.model, texts)
    if "st" not in args.skip:
        section("embedding_baseline_sentence_transformers", args.out)(bench_st_baseline)(
            args.model, texts[: args.baseline_records], args.st_configs
        )
    if "ours" not in args.skip:
        section("embedding_auditor", args.out)(bench_ours)(
            args.model, texts, Path("/tmp/auditor-gpu-cache"), args.budgets
        )
    emb = np.load("/tmp/ours_emb.npy") if os.path.exists("/tmp/ours_emb.npy") else None
    if emb is None:
        rng = np.random.default_rng(0)
        emb = rng.normal(size=(args.records, 384)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        RESULTS["note"] = "MMD timings on random unit vectors (the embedding section failed)"
    if "mmd" not in args.skip:
        section("mmd", args.out)(bench_mmd)(emb, args.mmd_sizes)
    if "power" not in args.skip:
        section("power", args.out)(bench_power)(emb, args.power_reps, args.power_per_side, args.fractions)
    save(args.out)
    print(json.dumps(RESULTS, indent=1, default=str))


if __name__ == "__main__":
    main()
