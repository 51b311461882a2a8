"""auditor's speed benchmarks: one entry point, a table on stdout, JSON on disk.

    python -m benchmarks.run [--quick] [--only startup,embedding,...] [--json FILE] [--markdown FILE]

Every figure is measured beside its baseline in the same run:

- ``startup``: ``auditor --help`` wall time, against importing sentence-transformers (what
  a CLI that loads its model library eagerly pays before printing anything);
- ``embedding``: auditor's encoder cold (through a fresh cache) and cached, against plain
  ``SentenceTransformer.encode`` on the same Alpaca records; the static model beside them;
- ``mmd``: the permutation MMD test (B=1000) against a straightforward implementation
  written here: the full kernel matrix once, then every permutation re-indexes it and
  recomputes the three block means (how popular drift libraries write it);
- ``checks``: each check of rules/default.yaml, time and peak memory at 2k/10k/50k records
  per side, each run in a fresh subprocess (peak RSS over the RSS at its start);
- ``e2e``: ``auditor audit`` wall time with a cold cache, then warm, MiniLM and static;
- ``quality``: the planted-attack suite (auditor/planted.py) with MiniLM and with the
  static model, to show what the static model's speed costs in detection;
- ``streaming``: ``auditor embed`` of a large JSONL file (1M records; 100k with --quick)
  with the static model, peak RSS against loading the file whole, a kill -9 and resume;
  and a MiniLM run on a smaller file;
- ``gpu``: benchmarks/gpu.py when CUDA is present, else the stored results of the last GPU
  session (benchmarks/gpu_results.json), marked as such.

Synthetic inputs beyond the 5,000 real Alpaca records are real records with a numeric
suffix (distinct texts) and their real MiniLM embeddings (tests/fixtures/alpaca_minilm.npz)
plus small isotropic noise (distinct points).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "alpaca_5000.json"
FIXTURE = ROOT / "tests" / "fixtures" / "alpaca_minilm.npz"
PY = sys.executable
AUDITOR = [PY, str(ROOT / "cli.py")]
SECTIONS = ("startup", "embedding", "mmd", "checks", "e2e", "quality", "streaming", "gpu")


# ---------------------------------------------------------------------------- data


def alpaca_records() -> list[dict[str, str]]:
    return json.loads(DATA.read_text(encoding="utf-8"))


def record_text(r: dict[str, str]) -> str:
    return "\n".join(p for p in (r["instruction"], r["input"], r["output"]) if p)


def numbered_record(r: dict[str, str], i: int) -> str:
    """One JSONL line: Alpaca record ``r`` made distinct as copy ``i`` (large synthetic files)."""
    return json.dumps({"instruction": f"{r['instruction']} (#{i})", "input": r["input"], "output": r["output"]}) + "\n"


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def real_views() -> dict[str, np.ndarray]:
    with np.load(FIXTURE, allow_pickle=False) as z:
        return {k: unit(z[k].astype(np.float32)) for k in ("embeddings", "prompt", "response")}


def noisy_rows(base: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """base[idx] plus isotropic noise ~0.35x the median pairwise distance: distinct points."""
    sd = 0.35 * 1.2 / np.sqrt(base.shape[1])
    return unit(base[idx] + rng.normal(scale=sd, size=(len(idx), base.shape[1])).astype(np.float32))


def synthetic_pair(n: int, seed: int = 0) -> tuple[Any, Any]:
    """Reference and current snapshots of n records each, drawn alike (the null)."""
    from auditor.textutil import batch_from_texts
    from auditor.types import ModelInfo, Snapshot

    recs = alpaca_records()
    views = real_views()
    rng = np.random.default_rng(seed)
    model = ModelInfo(name="all-MiniLM-L6-v2 (fixture + noise)", sha256="0" * 64, dim=384)
    snaps = []
    tags = rng.permutation(2 * n)  # distinct suffixes that do not tell the sides apart
    for side in range(2):
        idx = rng.integers(len(recs), size=n)
        sfx = [f" #{t}" for t in tags[side * n : (side + 1) * n]]
        prompts = [
            "\n".join(p for p in (recs[i]["instruction"], recs[i]["input"]) if p) + s
            for i, s in zip(idx, sfx)
        ]
        responses = [recs[i]["output"] for i in idx]
        texts = [p + "\n" + r for p, r in zip(prompts, responses)]
        batch = batch_from_texts(texts, prompts=prompts, responses=responses, path=f"side{side}.jsonl")
        emb = {k: noisy_rows(v, idx, rng) for k, v in views.items()}
        snaps.append(
            Snapshot(
                batch=batch,
                embeddings=emb["embeddings"],
                model=model,
                views={"prompt": emb["prompt"], "response": emb["response"]},
            )
        )
    return snaps[0], snaps[1]


def null_embeddings(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    base = real_views()["embeddings"]
    rng = np.random.default_rng(seed)
    return noisy_rows(base, rng.integers(len(base), size=n), rng), noisy_rows(
        base, rng.integers(len(base), size=n), rng
    )


# ---------------------------------------------------------------------------- measuring


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark to the current RSS; return the current RSS (bytes)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status("VmRSS")


def peak_rss() -> int:
    return _status("VmHWM")


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child(args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m benchmarks.run --child ...`` and parse its last JSON line."""
    cmd = [PY, "-m", "benchmarks.run", "--child", *args]
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def run_with_rss(cmd: list[str], *, kill_after: float | None = None, cwd: Path = ROOT) -> dict[str, Any]:
    """Run a command, optionally SIGKILL it after ``kill_after`` s; wall time and peak RSS."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    killed = False
    if kill_after is not None:
        try:
            p.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            killed = True
    _, status, usage = os.wait4(p.pid, 0)
    out = p.stdout.read().decode() if p.stdout else ""
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "killed": killed,
        "rc": os.waitstatus_to_exitcode(status),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "stdout": out.strip()[-500:],
    }


# ---------------------------------------------------------------------------- children


def naive_permutation_mmd(
    x: np.ndarray, y: np.ndarray, permutations: int, seed: int = 0
) -> tuple[float, float]:
    """The baseline: a straightforward permutation MMD (RBF, median bandwidth).

    The full kernel matrix is computed once; each permutation re-indexes it and
    recomputes the biased MMD² from its three blocks, as popular drift-detection
    libraries do.  p = (k+1)/(B+1).
    """
    z = np.concatenate([x, y]).astype(np.float32)
    n, nx = len(z), len(x)
    sq = (z * z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)
    sub = d2[:2000, :2000]
    bw2 = np.median(sub[np.triu_indices(len(sub), 1)])
    k = np.exp(-d2 / (2 * bw2))
    del d2

    def stat(kk: np.ndarray) -> float:
        return float(kk[:nx, :nx].mean() + kk[nx:, nx:].mean() - 2 * kk[:nx, nx:].mean())

    observed = stat(k)
    rng = np.random.default_rng(seed)
    count = 0
    t0 = time.perf_counter()
    for _ in range(permutations):
        idx = rng.permutation(n)
        count += stat(k[idx][:, idx]) >= observed
    NAIVE_TIMING["per_permutation_s"] = (time.perf_counter() - t0) / max(permutations, 1)
    return observed, (count + 1) / (permutations + 1)


NAIVE_TIMING: dict[str, float] = {}


def child_main(kind: str, n: int, extra: dict[str, Any]) -> dict[str, Any]:
    if kind == "mmd":
        x, y = null_embeddings(n, seed=1)
        perms = int(extra.get("perms", 1000))
        rss0 = reset_peak_rss()
        t0 = time.perf_counter()
        if extra.get("impl") == "naive":
            _, p = naive_permutation_mmd(x, y, perms)
            total = time.perf_counter() - t0
            per = NAIVE_TIMING["per_permutation_s"]
            return {
                "seconds": round(total, 3),
                # the one-off kernel cost plus 1000 permutations at the measured rate
                "seconds_B1000": round(total - perms * per + 1000 * per, 1),
                "per_permutation_s": round(per, 4),
                "peak_rss_delta_mib": round((peak_rss() - rss0) / 2**20),
                "peak_rss_mib": round(peak_rss() / 2**20),
                "p": p,
                "method": "naive full matrix",
                "permutations": perms,
            }
        else:
            from auditor.checks.drift import mmd
            from auditor.textutil import batch_from_texts
            from auditor.types import ModelInfo, Snapshot

            m = ModelInfo("synthetic", "0" * 64, x.shape[1])
            sx = Snapshot(batch_from_texts([f"r{i}" for i in range(n)]), x, m)
            sy = Snapshot(batch_from_texts([f"c{i}" for i in range(n)]), y, m)
            t0 = time.perf_counter()  # the batches above are not the statistic's cost
            rss0 = reset_peak_rss()
            f = mmd(sx, sy, seed=0, permutations=perms, device="cpu")[0]
            p, method = float(f.p_value or 1), f.details["method"]
        return {
            "seconds": round(time.perf_counter() - t0, 3),
            "peak_rss_delta_mib": round((peak_rss() - rss0) / 2**20),
            "peak_rss_mib": round(peak_rss() / 2**20),
            "p": p,
            "method": method,
            "permutations": perms,
        }
    if kind == "check":
        from auditor.checks import registry
        from auditor.rules import load_rules

        name = str(extra["check"])
        rule = next(r for r in load_rules().rules if r.check == name)
        ref, cur = synthetic_pair(n)
        spec = registry()[name]
        rss0 = reset_peak_rss()
        t0 = time.perf_counter()
        findings = spec.run(ref, cur, seed=0, params=rule.params)
        return {
            "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_delta_mib": round((peak_rss() - rss0) / 2**20),
            "peak_rss_mib": round(peak_rss() / 2**20),
            "min_p": min((f.p_value for f in findings if f.p_value is not None), default=None),
            "n_findings": len(findings),
        }
    if kind == "loadwhole":
        from auditor.io import load

        rss0 = reset_peak_rss()
        t0 = time.perf_counter()
        b = load(str(extra["path"]))
        return {
            "records": len(b),
            "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_mib": round(peak_rss() / 2**20),
            "peak_rss_delta_mib": round((peak_rss() - rss0) / 2**20),
        }
    raise SystemExit(f"unknown child {kind}")


# ---------------------------------------------------------------------------- sections


def bench_startup(quick: bool) -> dict[str, Any]:
    reps = 3 if quick else 5

    def median_wall(cmd: list[str]) -> float:
        walls = []
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False)
            walls.append(time.perf_counter() - t0)
        return round(statistics.median(walls), 3)

    exe = Path(PY).with_name("auditor")
    cmd = [str(exe), "--help"] if exe.exists() else [*AUDITOR, "--help"]
    return {
        "auditor --help": median_wall(cmd),
        "baseline: python -c 'import sentence_transformers'": median_wall(
            [PY, "-c", "import sentence_transformers"]
        ),
        "python -c 'import torch'": median_wall([PY, "-c", "import torch"]),
        "python -c pass": median_wall([PY, "-c", "pass"]),
        "repeats": reps,
    }


def bench_embedding(quick: bool) -> dict[str, Any]:
    from auditor.cache import EmbeddingCache
    from auditor.embed import embed_texts
    from auditor.encoders import load_encoder
    from auditor.textutil import content_hash

    n = 300 if quick else 1000
    recs = alpaca_records()
    texts = [record_text(r) for r in recs[:n]]
    hashes = [content_hash(t) for t in texts]
    out: dict[str, Any] = {"records": n, "text": "whole Alpaca records (instruction, input, output)"}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        enc = load_encoder(device="cpu")
        enc._load()  # type: ignore[attr-defined]
        load_s = time.perf_counter() - t0
        enc.encode(texts[:16])
        t0 = time.perf_counter()
        embed_texts(texts, hashes, enc, EmbeddingCache(tmp))
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, again = embed_texts(texts, hashes, enc, EmbeddingCache(tmp))
        warm = time.perf_counter() - t0
        out["auditor MiniLM"] = {
            "load_s": round(load_s, 2),
            "cold_records_per_s": round(n / cold, 1),
            "cached_records_per_s": round(n / warm),
            "cached_encoded": again,
        }
        from sentence_transformers import SentenceTransformer

        t0 = time.perf_counter()
        st = SentenceTransformer(str(enc.model_dir), device="cpu")  # type: ignore[attr-defined]
        st_load = time.perf_counter() - t0
        st.encode(texts[:16])
        for bs in (32, 64):
            t0 = time.perf_counter()
            ref = st.encode(texts, batch_size=bs, normalize_embeddings=True)
            dt = time.perf_counter() - t0
            out[f"baseline sentence-transformers encode, batch {bs}"] = {
                "load_s": round(st_load, 2),
                "records_per_s": round(n / dt, 1),
            }
        ours = EmbeddingCache(tmp).get(enc.fingerprint, hashes, enc.dim)[0]
        out["cosine ours vs sentence-transformers (min)"] = float((ours * ref).sum(1).min())
        # the static model: many more records, it is fast
        ns = 5000 if quick else 20000
        stexts = [record_text(recs[i % len(recs)]) + ("" if i < len(recs) else f" #{i}") for i in range(ns)]
        shashes = [content_hash(t) for t in stexts]
        try:
            t0 = time.perf_counter()
            senc = load_encoder("static", device="cpu")
            sload = time.perf_counter() - t0
            t0 = time.perf_counter()
            embed_texts(stexts, shashes, senc, EmbeddingCache(tmp))
            scold = time.perf_counter() - t0
            t0 = time.perf_counter()
            embed_texts(stexts, shashes, senc, EmbeddingCache(tmp))
            swarm = time.perf_counter() - t0
            out["auditor static (tokenlearn-static-model, 64-d)"] = {
                "records": ns,
                "load_s": round(sload, 2),
                "cold_records_per_s": round(ns / scold),
                "cached_records_per_s": round(ns / swarm),
            }
        except Exception as err:  # noqa: BLE001 - the [fast] extra may be missing
            out["auditor static (tokenlearn-static-model, 64-d)"] = {"error": str(err)}
    return out


def bench_mmd(quick: bool) -> dict[str, Any]:
    timeout = 900 if quick else 2400
    rows = []
    sizes = [2000, 5000, 10000, 50000]
    for n in sizes:
        ours = child(["mmd", "--n", str(n), "--impl", "ours", "--perms", "1000"], timeout)
        row: dict[str, Any] = {"per_side": n, "ours": ours}
        if n <= 10000:
            # the baseline's permutations all cost the same: time a sample of them, then
            # report the kernel's one-off cost plus 1000 permutations at that rate
            b = {2000: 200, 5000: 100, 10000: 30} if not quick else {2000: 50, 5000: 20, 10000: 10}
            row["baseline"] = child(["mmd", "--n", str(n), "--impl", "naive", "--perms", str(b[n])], timeout)
        else:
            need = 2 * (2 * n) ** 2 * 4 / 2**30
            row["baseline"] = {
                "not run": f"needs the {2 * n}x{2 * n} float32 kernel plus a permuted copy: {need:.0f} GiB"
            }
        rows.append(row)
        print(f"  mmd {n}: {row}", flush=True)
    return {"permutations": 1000, "rows": rows}


def bench_checks(quick: bool) -> dict[str, Any]:
    from auditor.rules import load_rules

    sizes = CHECK_SIZES or ([2000, 10000] if quick else [2000, 10000, 50000])
    timeout = CHECK_TIMEOUT[0] or (600 if quick else 900)
    checks = [r.check for r in load_rules().rules]
    rows = [r for r in PREVIOUS.get("checks", {}).get("rows", []) if r["per_side"] not in sizes]
    for n in sizes:
        for name in checks:
            r = child(["check", "--n", str(n), "--check", name], timeout)
            rows.append({"check": name, "per_side": n, **r})
            print(f"  {name} {n}: {r}", flush=True)
    return {"rows": rows}


def write_jsonl(path: Path, recs: list[dict[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")


def bench_e2e(quick: bool) -> dict[str, Any]:
    n = 500 if quick else 2000
    recs = alpaca_records()
    out: dict[str, Any] = {"records_per_side": n}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        write_jsonl(t / "cur.jsonl", recs[:n])
        write_jsonl(t / "ref.jsonl", recs[n : 2 * n])
        for label, extra in (("MiniLM", []), ("static", ["--model", "static"])):
            cache = t / f"cache-{label}"
            cmd = [
                *AUDITOR,
                "audit",
                str(t / "cur.jsonl"),
                "-r",
                str(t / "ref.jsonl"),
                "--out",
                str(t / "out"),
                "-q",
            ]
            cmd += ["--cache-dir", str(cache), "--device", "cpu", *extra]
            cold = run_with_rss(cmd)
            warm = run_with_rss(cmd)
            out[label] = {
                "cold_s": cold["seconds"],
                "warm_s": warm["seconds"],
                "speedup": round(cold["seconds"] / max(warm["seconds"], 1e-9), 1),
                "exit_codes": [cold["rc"], warm["rc"]],
                "peak_rss_mib": [cold["peak_rss_mib"], warm["peak_rss_mib"]],
            }
            print(f"  e2e {label}: {out[label]}", flush=True)
    return out


def bench_quality(quick: bool) -> dict[str, Any]:
    from auditor.cache import EmbeddingCache
    from auditor.encoders import load_encoder
    from auditor.planted import SCENARIOS, records_from_alpaca, run_scenario
    from auditor.rules import load_rules
    from tests.helpers import fixture_cache

    pool = records_from_alpaca(alpaca_records())
    rules = load_rules()
    out: dict[str, Any] = {"rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        models: list[tuple[str, Any, Any]] = [
            ("MiniLM", load_encoder(device="cpu"), fixture_cache(Path(tmp) / "minilm")),
        ]
        try:
            models.append(
                ("static", load_encoder("static", device="cpu"), EmbeddingCache(Path(tmp) / "static"))
            )
        except Exception as err:  # noqa: BLE001
            out["static_error"] = str(err)
        for name in SCENARIOS:
            row: dict[str, Any] = {"scenario": name}
            for label, enc, cache in models:
                r = run_scenario(SCENARIOS[name](pool, 0), enc, cache, rules, seed=0)
                row[label] = {
                    "status": r.status,
                    "passed": r.passed,
                    "check": r.localisation.check,
                    "precision": round(r.localisation.precision, 2),
                    "recall": round(r.localisation.recall, 2),
                    "seconds": round(r.seconds, 1),
                }
            out["rows"].append(row)
            print(f"  {row}", flush=True)
    return out


def bench_streaming(quick: bool) -> dict[str, Any]:
    n_big = 100_000 if quick else 1_000_000
    n_small = 300 if quick else 2000
    recs = alpaca_records()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        t = Path(tmp)
        big = t / "big.jsonl"
        with open(big, "w", encoding="utf-8") as f:
            for i in range(n_big):
                r = recs[i % len(recs)]
                f.write(numbered_record(r, i))
        out["file"] = {"records": n_big, "mib": round(big.stat().st_size / 2**20)}
        embed = [*AUDITOR, "embed", str(big), "--model", "static", "-q"]
        full = run_with_rss([*embed, "--cache-dir", str(t / "c1")])
        out["static full run"] = full
        print(f"  streaming full: {full}", flush=True)
        killed = run_with_rss([*embed, "--cache-dir", str(t / "c2")], kill_after=0.5 * full["seconds"])
        resumed = run_with_rss([*embed, "--cache-dir", str(t / "c2")])
        out["static killed at ~50%"] = killed
        out["static resumed"] = resumed
        print(f"  streaming resume: {resumed}", flush=True)
        whole = child(["loadwhole", "--n", "0", "--path", str(big)], 3600)
        out["baseline: auditor.io.load of the whole file (no embedding)"] = whole
        small = t / "small.jsonl"
        write_jsonl(small, recs[:n_small])
        # read in chunks of 256 so that a kill leaves finished pieces behind
        embed_small = [*AUDITOR, "embed", str(small), "-q", "--device", "cpu", "--chunk", "256"]
        mfull = run_with_rss([*embed_small, "--cache-dir", str(t / "m1")])
        mkilled = run_with_rss(
            [*embed_small, "--cache-dir", str(t / "m2")], kill_after=0.6 * mfull["seconds"]
        )
        mresumed = run_with_rss([*embed_small, "--cache-dir", str(t / "m2")])
        out["MiniLM"] = {"records": n_small, "full": mfull, "killed": mkilled, "resumed": mresumed}
        print(f"  streaming MiniLM: {out['MiniLM']}", flush=True)
    return out


def bench_gpu(quick: bool) -> dict[str, Any]:
    from auditor.kernels import resolve_device

    if resolve_device("auto") != "cpu":
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [PY, "-m", "benchmarks.gpu", "--out", tmp, "--data", str(DATA), "--model"]
            from auditor.encoders import bundled_model_dir

            subprocess.run([*cmd, str(bundled_model_dir())], cwd=ROOT, check=False)
            return {"source": "this run", **json.loads((Path(tmp) / "gpu_results.json").read_text())}
    stored = ROOT / "benchmarks" / "gpu_results.json"
    if stored.exists():
        return {
            "source": "stored results of the last GPU session (this machine has no CUDA)",
            **json.loads(stored.read_text()),
        }
    return {"source": "no GPU here and no stored GPU results"}


PREVIOUS: dict[str, Any] = {}  # results already in --json (a section run alone adds to them)
CHECK_SIZES: list[int] = []
CHECK_TIMEOUT: list[float] = [0.0]

BENCHES: dict[str, Callable[[bool], dict[str, Any]]] = {
    "startup": bench_startup,
    "embedding": bench_embedding,
    "mmd": bench_mmd,
    "checks": bench_checks,
    "e2e": bench_e2e,
    "quality": bench_quality,
    "streaming": bench_streaming,
    "gpu": bench_gpu,
}


# ---------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = _meminfo_gib()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def _meminfo_gib() -> float:
    try:
        kb = int(next(ln.split()[1] for ln in open("/proc/meminfo") if ln.startswith("MemTotal")))
        return round(kb / 2**20, 1)
    except (OSError, StopIteration):
        return 0.0


def markdown(results: dict[str, Any]) -> str:
    lines: list[str] = []
    m = results.get("machine", {})
    lines.append(
        f"Machine: {m.get('cpu')} ({m.get('cores')} cores, {m.get('memory_gib')} GiB), Python {m.get('python')}."
    )
    if "startup" in results:
        s = results["startup"]
        lines += ["", "| start-up (median wall) | seconds |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in s.items() if k != "repeats"]
    if "embedding" in results:
        e = results["embedding"]
        lines += [
            "",
            f"| embedding, {e['records']} {e['text']} | load s | records/s cold | records/s cached |",
            "|---|---|---|---|",
        ]
        for k, v in e.items():
            if isinstance(v, dict) and "error" not in v:
                cold = v.get("cold_records_per_s", v.get("records_per_s"))
                lines.append(
                    f"| {k} | {v.get('load_s', '')} | {cold} | {v.get('cached_records_per_s', '-')} |"
                )
        lines.append(
            f"\nMinimum cosine, auditor's encoder vs sentence-transformers: {e.get('cosine ours vs sentence-transformers (min)')}"
        )
    if "mmd" in results:
        lines += [
            "",
            "| MMD, B=1000, per side | auditor s | auditor peak MiB | method | baseline s | baseline peak MiB | speed-up |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in results["mmd"]["rows"]:
            o, b = r["ours"], r["baseline"]
            bs = b.get("seconds_B1000", b.get("seconds"))
            note = "" if b.get("permutations", 1000) >= 1000 else f" ({b['permutations']} timed)"
            sp = round(bs / o["seconds"], 1) if isinstance(bs, (int, float)) and o.get("seconds") else "-"
            bdesc = f"{bs}{note}" if bs is not None else b.get("not run", b.get("error", "-"))
            lines.append(
                f"| {r['per_side']} | {o.get('seconds', o.get('error'))} | {o.get('peak_rss_delta_mib')} | {o.get('method')} | {bdesc} | {b.get('peak_rss_delta_mib', '-')} | {sp} |"
            )
    if "checks" in results:
        lines += ["", "| check | per side | seconds | peak RSS rise MiB | min p |", "|---|---|---|---|---|"]
        for r in results["checks"]["rows"]:
            lines.append(
                f"| {r['check']} | {r['per_side']} | {r.get('seconds', r.get('error'))} | {r.get('peak_rss_delta_mib', '-')} | {r.get('min_p', '-')} |"
            )
    if "e2e" in results:
        e = results["e2e"]
        lines += [
            "",
            f"| auditor audit, {e['records_per_side']} vs {e['records_per_side']} records | cold s | warm s | cold/warm |",
            "|---|---|---|---|",
        ]
        for k in ("MiniLM", "static"):
            if k in e:
                lines.append(f"| {k} | {e[k]['cold_s']} | {e[k]['warm_s']} | {e[k]['speedup']}x |")
    if "quality" in results:
        q = results["quality"]
        lines += [
            "",
            "| planted scenario | MiniLM: status, check, precision/recall | static: status, check, precision/recall |",
            "|---|---|---|",
        ]
        for r in q["rows"]:
            cells = []
            for k in ("MiniLM", "static"):
                v = r.get(k)
                cells.append(
                    "-"
                    if v is None
                    else f"{v['status']} {'ok' if v['passed'] else 'MISSED'}, {v['check'] or '-'}, {v['precision']}/{v['recall']}"
                )
            lines.append(f"| {r['scenario']} | {cells[0]} | {cells[1]} |")
    if "streaming" in results:
        s = results["streaming"]
        lines += [
            "",
            f"Streaming `auditor embed` of {s['file']['records']} records ({s['file']['mib']} MiB JSONL):",
            "",
            "| run | seconds | peak RSS MiB | output |",
            "|---|---|---|---|",
        ]
        for k in ("static full run", "static killed at ~50%", "static resumed"):
            v = s.get(k, {})
            lines.append(
                f"| {k} | {v.get('seconds')} | {v.get('peak_rss_mib')} | {v.get('stdout', '').replace('|', '/')} |"
            )
        w = s.get("baseline: auditor.io.load of the whole file (no embedding)", {})
        lines.append(
            f"| baseline: io.load whole file | {w.get('seconds')} | {w.get('peak_rss_mib')} | {w.get('records', w.get('error'))} records |"
        )
        mm = s.get("MiniLM", {})
        for k in ("full", "killed", "resumed"):
            v = mm.get(k, {})
            lines.append(
                f"| MiniLM, {mm.get('records')} records, {k} | {v.get('seconds')} | {v.get('peak_rss_mib')} | {v.get('stdout', '').replace('|', '/')} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (minutes, not tens of minutes)")
    ap.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}"
    )
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results.json")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    ap.add_argument("--check-sizes", type=int, nargs="*", default=None, help="records per side for 'checks'")
    ap.add_argument(
        "--check-timeout", type=float, default=0.0, help="seconds per check run (default 600/900)"
    )
    ap.add_argument("--child", nargs="?", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    ap.add_argument("--perms", type=int, default=1000, help=argparse.SUPPRESS)
    ap.add_argument("--check", default="", help=argparse.SUPPRESS)
    ap.add_argument("--path", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        extra = {"impl": args.impl, "perms": args.perms, "check": args.check, "path": args.path}
        print(json.dumps(child_main(args.child, args.n, extra)))
        return
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in BENCHES]
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {unknown} (choose from {', '.join(SECTIONS)})")
    results: dict[str, Any] = json.loads(args.json.read_text()) if args.json.exists() else {}
    PREVIOUS.update(results)
    CHECK_SIZES.extend(args.check_sizes or [])
    CHECK_TIMEOUT[0] = args.check_timeout
    results["machine"] = machine()
    results["quick"] = args.quick
    for name in wanted:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        results[name] = BENCHES[name](args.quick)
        results.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        args.json.write_text(json.dumps(results, indent=1, default=str))
    md = markdown(results)
    print(md)
    if args.markdown:
        args.markdown.write_text(md)


if __name__ == "__main__":
    main()
