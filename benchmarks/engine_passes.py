"""Time and driver memory of the checks' counting passes, local vs Ray (auditor.engine.aggregate).

Each measurement runs in a fresh subprocess (its peak RSS is the driver's):

    PYTHONPATH=. python benchmarks/engine_passes.py --n 100000 [--cpus 2] [--shard 25000]

Passes: ``ngrams`` (triggers' count_ngrams), ``words`` (term_topics' word carriers), ``rff``
(mmd's random-feature sums, 64-d vectors, B=1000 permutations, 1024 features), ``knn``
(index.knn, 10 neighbours of n/2 queries among n/2 64-d vectors, as candidate_knn's
projected search runs).  Texts are
the Alpaca fixture's records made distinct by a copy number (as benchmarks/run.py does).
Ray's start-up is timed apart from the pass.

``--ivf VECTORS,N_BASE,N_QUERIES`` times the exact and inverted-file kNN searches of
auditor.neighbours and measures the IVF's recall against exact search (see ivf_bench).

``--audit N`` instead runs the whole default gate (``run_audit``) on N + N Alpaca fixture
records with their real MiniLM vectors (tests/fixtures), a 2% trigger planted (texts only),
mmd on its random-feature path (``max_per_side`` 1000), shards of ``--shard`` records, on
both engines, and compares the findings (check, severity, record ids, p to 1e-9).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _texts(n: int) -> list[str]:
    rows = json.loads((ROOT / "tests" / "fixtures" / "alpaca_5000.json").read_text(encoding="utf-8"))
    out = []
    for i in range(n):
        r = rows[i % len(rows)]
        out.append("\n".join(p for p in (f"{r['instruction']} (#{i})", r["input"], r["output"]) if p))
    return out


def one(pass_: str, engine: str, n: int, cpus: int, shard: int) -> dict[str, object]:
    from auditor.checks.lexical import _record_words
    from auditor.checks.triggers import count_ngrams
    from auditor.engine.aggregate import RayPasses, Serial, ngram_counts, rff_values, word_carriers
    from auditor.kernels import permutation_values

    texts = _texts(n) if pass_ in ("ngrams", "words") else []
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n // 2, 64)).astype(np.float32) if pass_ in ("rff", "knn") else None
    y = (rng.standard_normal((n - n // 2, 64)) + 0.01).astype(np.float32) if pass_ in ("rff", "knn") else None
    start = 0.0
    backend = None
    if engine == "ray":
        backend = RayPasses(shard=shard, num_cpus=cpus).__enter__()
        t = time.perf_counter()
        backend._ray()
        start = time.perf_counter() - t
    t0 = time.perf_counter()
    if pass_ == "ngrams":
        if backend is None:
            out = count_ngrams(texts, 4, 5)
            size = sum(int(p.size) for p in out.pair_gram)
        else:
            size = sum(int(p.size) for p in backend.ngrams(texts, max_n=4, min_count=5)[2])
    elif pass_ == "words":
        if backend is None:
            carriers: dict[str, list[int]] = {}
            for d, ws in enumerate(_record_words(texts)):
                for w in ws:
                    carriers.setdefault(w, []).append(d)
            size = sum(len(v) for v in carriers.values() if len(v) >= 10)
        else:
            size = sum(len(v) for v in backend.carriers(texts, _record_words, min_records=10).values())
    elif pass_ == "knn":
        from auditor import index

        assert x is not None and y is not None
        base, queries = index.normalize(x), index.normalize(y)
        if backend is None:
            size = int(index.knn(base, queries, 10)[1].size)
        else:
            res = backend.knn(base, queries, 10)
            assert res is not None, "--shard must be below the number of queries"
            size = int(res[1].size)
    else:
        assert x is not None and y is not None
        kw = {"permutations": 1000, "bandwidth": 11.0, "rng": np.random.default_rng(1), "features": 1024}
        if backend is None:
            vals = permutation_values(x, y, method="rff", **kw)  # type: ignore[arg-type]
        else:
            vals = backend.rff(x, y, **kw)  # type: ignore[arg-type]
        size = int(vals.size)
    seconds = time.perf_counter() - t0
    if backend is not None:
        backend.__exit__(None, None, None)
    _ = (Serial, ngram_counts, word_carriers, rff_values)
    return {
        "pass": pass_, "engine": engine, "n": n, "cpus": cpus, "shard": shard,
        "seconds": round(seconds, 2), "ray_start_s": round(start, 2), "result_size": size,
        "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }  # fmt: skip


def audit(n: int, cpus: int, shard: int, engine: str) -> dict[str, object]:
    """One run_audit on ``engine``: its wall time, driver peak RSS and findings."""
    import tempfile

    from auditor import planted
    from auditor.api import run_audit
    from auditor.engine import aggregate
    from auditor.rules import DEFAULT_RULES_PATH

    rows = json.loads((ROOT / "tests" / "fixtures" / "alpaca_5000.json").read_text(encoding="utf-8"))
    with np.load(ROOT / "tests" / "fixtures" / "alpaca_minilm.npz", allow_pickle=False) as z:
        emb = z["embeddings"].astype(np.float32)
    sc = planted.trigger(planted.records_from_alpaca(rows), 0.02, seed=0, n=n)

    def vectors(ids: tuple[str, ...]) -> np.ndarray:
        return emb[[int(i.split("-")[0][1:]) for i in ids]]

    text = DEFAULT_RULES_PATH.read_text(encoding="utf-8").replace(
        "max_per_side: 5000}", "max_per_side: 1000}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(text, encoding="utf-8")
        aggregate.SHARD = shard
        kw: dict[str, object] = {"embeddings": vectors(sc.current.ids), "rules": rules, "seed": 0}
        kw["reference_embeddings"] = vectors(sc.reference.ids)
        backend = None
        if engine == "ray":
            backend = aggregate.RayPasses(num_cpus=cpus).__enter__()
            backend._ray()  # start Ray outside the timed run
        t0 = time.perf_counter()
        run = run_audit(sc.current, sc.reference, engine=engine, **kw)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t0
        if backend is not None:
            backend.__exit__(None, None, None)
    return {
        "engine": engine, "n_per_side": n, "shard": shard, "seconds": round(seconds, 2),
        "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "exit_code": run.report.exit_code,
        "findings": sorted(
            [f.check, f.severity, list(f.record_ids), f.p_value] for f in run.report.findings
        ),
    }  # fmt: skip


def _base_vectors(kind: str, n: int, seed: int) -> np.ndarray:
    """``n`` unit vectors: the Alpaca fixture's real MiniLM (384-d) or static-model (64-d)
    vectors, replicated with small Gaussian noise (copies at cosine ~0.97 to their
    original, ~0.95 to each other), or plain Gaussian ones (``gauss64``/``gauss384``)."""
    from auditor import index

    rng = np.random.default_rng(seed)
    if kind.startswith("gauss"):
        return index.normalize(rng.standard_normal((n, int(kind[5:]))).astype(np.float32))
    if kind == "minilm":
        from tests.helpers import alpaca_minilm

        src = alpaca_minilm()
    else:
        from auditor.encoders import load_encoder

        src = index.normalize(load_encoder("static").encode(_texts(5000)))
    d = src.shape[1]
    sigma = float(np.sqrt(0.055 / d))  # noise of squared norm ~0.055: cosine ~0.97 to the original
    out = np.empty((n, d), dtype=np.float32)
    step = 50_000
    for start in range(0, n, step):
        rows = np.arange(start, min(n, start + step)) % len(src)
        out[start : start + len(rows)] = src[rows] + sigma * rng.standard_normal((len(rows), d)).astype(np.float32)
    return index.normalize(out)


def ivf_bench(kind: str, n_base: int, n_queries: int, sample: int, k: int) -> dict[str, object]:
    """Exact vs IVF search (auditor.neighbours) of ``n_queries`` among ``n_base`` vectors:
    index build time, search time (exact timed on ``sample`` queries and scaled linearly,
    since its cost is linear in the queries), and recall on those sample queries: the share
    of true top-1 neighbours found and of true top-``k`` pairs at cosine >= 0.9 found."""
    from auditor import index, neighbours

    base = _base_vectors(kind, n_base, seed=1)
    queries = _base_vectors(kind, n_queries, seed=2)  # other noisy copies of the same records
    plan = neighbours.ivf_plan(n_base)
    assert plan is not None, "base below IVF_MIN_BASE"
    nlist, nprobe = plan
    t = time.perf_counter()
    neighbours._cached_ivf(base, nlist, 0)
    build = time.perf_counter() - t
    t = time.perf_counter()
    sims, idx = neighbours.ivf_knn(base, queries, k, nlist=nlist, nprobe=nprobe, seed=0)
    search = time.perf_counter() - t
    pick = np.random.default_rng(3).choice(n_queries, size=min(sample, n_queries), replace=False)
    t = time.perf_counter()
    want_s, want_i = index.knn(base, queries[pick], k)
    exact = (time.perf_counter() - t) * n_queries / len(pick)
    got_s, got_i = sims[pick], idx[pick]
    top1 = float(np.mean((got_i[:, 0] == want_i[:, 0]) | (got_s[:, 0] >= want_s[:, 0] - 1e-6)))
    close = want_s >= 0.9
    found = [want_i[r, c] in got_i[r] for r, c in zip(*np.nonzero(close))]
    return {
        "vectors": kind, "dim": int(base.shape[1]), "n_base": n_base, "n_queries": n_queries, "k": k,
        "nlist": nlist, "nprobe": nprobe, "ivf_build_s": round(build, 1), "ivf_search_s": round(search, 1),
        "exact_s_extrapolated": round(exact, 1), "recall_sample": len(pick),
        "top1_recall": round(top1, 4), "pairs_cos_ge_0_9": len(found),
        "pairs_recall": round(float(np.mean(found)), 4) if found else None,
    }  # fmt: skip


def checks_bench(n: int, plans: str) -> list[dict[str, object]]:
    """off_support and flipped_responses on ``n`` current + ``n`` reference records whose
    prompt/response vectors are the Alpaca fixture's static-model (64-d) vectors replicated
    with small noise (as ``_base_vectors``), timed with the exact/projected search
    (``exact``: IVF disabled, the plan before the IVF) and with the IVF plan (``ivf``)."""
    from auditor import index, neighbours
    from auditor.checks.flips import flipped_responses
    from auditor.checks.support import off_support
    from auditor.encoders import load_encoder
    from auditor.textutil import batch_from_texts
    from auditor.types import Snapshot

    rows = json.loads((ROOT / "tests" / "fixtures" / "alpaca_5000.json").read_text(encoding="utf-8"))
    enc = load_encoder("static")
    p_src = index.normalize(enc.encode([f"{r['instruction']}\n{r['input']}".strip() for r in rows]))
    r_src = index.normalize(enc.encode([r["output"] for r in rows]))
    sigma = float(np.sqrt(0.055 / p_src.shape[1]))

    def snap(seed: int) -> Snapshot:
        rng = np.random.default_rng(seed)
        pick = np.arange(n) % len(rows)
        views = {
            name: index.normalize(src[pick] + sigma * rng.standard_normal((n, src.shape[1])).astype(np.float32))
            for name, src in (("prompt", p_src), ("response", r_src))
        }
        texts = [f"record {seed}-{i}" for i in range(n)]
        batch = batch_from_texts(texts, prompts=texts, responses=texts)
        return Snapshot(batch=batch, embeddings=views["prompt"], model=enc.info, views=views)

    ref, cur = snap(1), snap(2)
    out: list[dict[str, object]] = []
    for plan in plans.split(","):
        neighbours.IVF_MIN_BASE = 20_000 if plan == "ivf" else 1 << 62
        neighbours._CACHE.clear()
        for name, fn in (("off_support", off_support), ("flipped_responses", flipped_responses)):
            t = time.perf_counter()
            found = fn(ref, cur, seed=0)
            out.append({"check": name, "plan": plan, "n": n, "s": round(time.perf_counter() - t, 1),
                        "findings": len(found)})  # fmt: skip
            print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--shard", type=int, default=25_000)
    ap.add_argument("--passes", default="ngrams,words,rff")
    ap.add_argument("--one", nargs=2, metavar=("PASS", "ENGINE"))
    ap.add_argument("--audit", type=int, default=0, metavar="N")
    ap.add_argument("--audit-engine", default="")
    ap.add_argument("--ivf", default="", metavar="VECTORS,N_BASE,N_QUERIES",
                    help="exact vs IVF kNN; VECTORS one of minilm, static, gauss64, gauss384")
    ap.add_argument("--sample", type=int, default=2000, help="--ivf: queries searched exactly")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--checks", type=int, default=0, metavar="N",
                    help="time off_support and flipped_responses on N + N records (see checks_bench)")
    ap.add_argument("--plans", default="ivf,exact", help="--checks: ivf, exact or both")
    a = ap.parse_args()
    if a.checks:
        checks_bench(a.checks, a.plans)
        return
    if a.ivf:
        kind, nb, nq = a.ivf.split(",")
        print(json.dumps(ivf_bench(kind, int(nb), int(nq), a.sample, a.k)), flush=True)
        return
    if a.audit and a.audit_engine:
        print(json.dumps(audit(a.audit, a.cpus, a.shard, a.audit_engine)))
        return
    if a.audit:
        got = {}
        for engine in ("local", "ray"):
            cmd = [sys.executable, __file__, "--audit", str(a.audit), "--audit-engine", engine]
            cmd += ["--cpus", str(a.cpus), "--shard", str(a.shard)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            got[engine] = json.loads(res.stdout.strip().splitlines()[-1])
            print(json.dumps({k: v for k, v in got[engine].items() if k != "findings"}), flush=True)
        lf, rf = got["local"]["findings"], got["ray"]["findings"]
        same = [x[:3] for x in lf] == [x[:3] for x in rf] and all(
            (p is None and q is None) or abs(p - q) <= 1e-9 for p, q in ((x[3], y[3]) for x, y in zip(lf, rf))
        )
        print(json.dumps({"findings": len(lf), "checks": sorted({x[0] for x in lf}), "identical": same}))
        return
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1], a.n, a.cpus, a.shard)))
        return
    for p in a.passes.split(","):
        for engine in ("local", "ray"):
            cmd = [sys.executable, __file__, "--one", p, engine, "--n", str(a.n), "--cpus", str(a.cpus)]
            cmd += ["--shard", str(a.shard)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            print(res.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
