"""Local vs Ray engine: embedding N records (a folder of JSONL shards) into a cold cache.

    PYTHONPATH=. python benchmarks/scale.py --records 200000 --model static --out /tmp/scale

Records are Alpaca texts with a running number appended (so every text is distinct and
the cache cannot help).  Each engine gets its own fresh cache; the same run then
re-embeds with the warm cache to show resumption costs nothing.  Peak memory: the
driver's max RSS (getrusage) and, for Ray, each worker's max RSS as the actors report it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_shards(folder: Path, n: int, shards: int) -> None:
    from benchmarks.run import numbered_record

    base = json.loads((ROOT / "tests" / "fixtures" / "alpaca_5000.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-n // shards)
    for s in range(shards):
        with open(folder / f"part-{s:05d}.jsonl", "w", encoding="utf-8") as f:
            for i in range(s * per, min(n, (s + 1) * per)):
                f.write(numbered_record(base[i % len(base)], i))


def throughput(models: list[str], n: int = 5000, n_minilm: int = 400) -> dict[str, float]:
    """CPU texts/s of each model on the first ``n`` Alpaca texts (MiniLM on ``n_minilm``:
    it is ~100x slower), after one warm-up call that loads the model."""
    from auditor.encoders import load_encoder

    rows = json.loads((ROOT / "tests" / "fixtures" / "alpaca_5000.json").read_text(encoding="utf-8"))
    texts = [f"{r['instruction']}\n{r.get('input', '')}\n{r['output']}" for r in rows][:n]
    out = {}
    for m in models:
        enc = load_encoder(None if m == "minilm" else m, device="cpu")
        part = texts[:n_minilm] if m == "minilm" else texts
        enc.encode(part[:32])
        t0 = time.perf_counter()
        enc.encode(part)
        out[m] = round(len(part) / (time.perf_counter() - t0), 1)
        print(f"{m}: {out[m]:,.1f} texts/s ({len(part)} texts)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--model", default="static")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/auditor-scale"))
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument(
        "--throughput",
        default=None,
        help="only measure CPU encode rates of these models (e.g. minilm,static,distilled)",
    )
    args = ap.parse_args()

    from auditor.cache import EmbeddingCache
    from auditor.embed import embed_file
    from auditor.encoders import load_encoder

    if args.throughput:
        print(json.dumps(throughput(args.throughput.split(","))))
        return
    data = args.out / f"shards-{args.records}"
    if not data.exists():
        make_shards(data, args.records, args.shards)
    encoder = load_encoder(args.model)
    results: dict[str, object] = {"records": args.records, "model": encoder.name, "cpus": os.cpu_count()}
    for engine in args.engines.split(","):
        cache_dir = args.out / f"cache-{engine}"
        shutil.rmtree(cache_dir, ignore_errors=True)
        key = b"bench-key-0123456789abcdef012345"
        t0 = time.perf_counter()
        if engine == "local":
            cold = embed_file(data, encoder, EmbeddingCache(cache_dir, key=key), chunk=65_536)
            warm = embed_file(data, encoder, EmbeddingCache(cache_dir, key=key), chunk=65_536)
            workers: dict[str, int] = {}
        else:
            from auditor.engine.ray_engine import RayEngine, encoder_factory

            with RayEngine(num_cpus=args.num_cpus) as eng:
                t0 = time.perf_counter()  # cluster start-up is reported apart
                watch = _Watch()
                fac = encoder_factory(args.model)
                cold = eng.embed_file(data, encoder, EmbeddingCache(cache_dir, key=key), factory=fac)
                warm = eng.embed_file(data, encoder, EmbeddingCache(cache_dir, key=key), factory=fac)
                workers = watch.stop()
        results[engine] = {
            "cold_s": round(cold.seconds, 1),
            "records_per_s": round(cold.n_records / cold.seconds),
            "encoded": cold.n_encoded,
            "warm_s": round(warm.seconds, 1),
            "warm_encoded": warm.n_encoded,
            "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "worker_peak_rss_mb": workers,
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        print(engine, results[engine], flush=True)
    (args.out / "scale.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


class _Watch:
    """Peak RSS (VmHWM, MB) of every Ray worker process on this machine, sampled each
    0.5 s while the run goes on (actors exit when their dataset ends)."""

    def __init__(self) -> None:
        import threading

        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for pid in os.listdir("/proc"):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read()
                    if not cmd.startswith(b"ray::"):
                        continue
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                name = f"{pid}:{cmd.split(bytes(1))[0].decode(errors='replace')[:40]}"
                                self.peaks[name] = max(self.peaks.get(name, 0), int(line.split()[1]) // 1024)
                except OSError:
                    continue

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._t.join()
        return dict(sorted(self.peaks.items(), key=lambda kv: -kv[1])[:8])


if __name__ == "__main__":
    main()
