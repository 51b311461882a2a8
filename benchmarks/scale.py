"""Local vs Ray engine: embedding N records (a folder of JSONL shards) into a cold cache.

    PYTHONPATH=. python benchmarks/scale.py --records 200000 --model static --out /tmp/scale

With ``--audit``: the whole ``auditor audit CUR/ --reference REF/ --model static`` (the
CLI, in this process) on ``--records`` current and ``--reference-records`` reference
records, with the wall time and the driver's peak RSS of each stage (reading each side,
embedding each side through the cache, every check, the reports) and the peak RSS of
every process the driver started (the Ray processes with ``--engines ray``):

    PYTHONPATH=. python benchmarks/scale.py --audit --records 1000000 \
        --reference-records 200000 --engines local --cache-dir /work/cache

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
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_shards(
    folder: Path,
    n: int,
    shards: int,
    base_of: Callable[[int], int] = lambda i: i,
    number: Callable[[int], int] = lambda i: i,
) -> None:
    """``n`` distinct Alpaca-derived records in ``shards`` JSONL files: record ``i`` is
    Alpaca record ``base_of(i) % 5000`` with ``number(i)`` appended."""
    from benchmarks.run import numbered_record

    base = json.loads((ROOT / "tests" / "fixtures" / "alpaca_5000.json").read_text())
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    per = -(-n // shards)
    for s in range(shards):
        with open(tmp / f"part-{s:05d}.jsonl", "w", encoding="utf-8") as f:
            for i in range(s * per, min(n, (s + 1) * per)):
                f.write(numbered_record(base[base_of(i) % len(base)], number(i)))
    tmp.rename(folder)  # a killed run never leaves a half-written input behind


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
    ap.add_argument("--audit", action="store_true", help="time the whole audit (see the module docstring)")
    ap.add_argument("--reference-records", type=int, default=200_000)
    ap.add_argument("--rules", type=Path, default=None, help="--audit: a rules file (default: the default gate)")
    ap.add_argument(
        "--cache-dir", type=Path, default=None, help="--audit: embedding cache (default OUT/cache)"
    )
    ap.add_argument(
        "--results", type=Path, default=None, help="--audit: also merge the result into this JSON"
    )
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
    if args.audit:
        audit_bench(args)
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


def audit_inputs(out: Path, n_cur: int, n_ref: int, shards: int) -> tuple[Path, Path]:
    """Current and reference shard folders from one distribution that share no text: both
    cycle through the 5,000 Alpaca records, and the numbers 0 .. n_cur + n_ref - 1 are dealt
    to the two sides by a seeded shuffle, so neither side's numbers differ from the other's
    in any way a check could see (an earlier version gave the current side the even numbers
    and the reference the odd ones, and off_support rightly flagged it)."""
    import numpy as np

    cur, ref = out / f"audit-cur-{n_cur}-shuffled", out / f"audit-ref-{n_ref}-of-{n_cur}-shuffled"
    numbers = np.random.default_rng(0).permutation(n_cur + n_ref)
    if not cur.exists():
        make_shards(cur, n_cur, shards, number=lambda i: int(numbers[i]))
    if not ref.exists():
        ref_shards = max(1, shards * n_ref // max(1, n_cur))
        make_shards(ref, n_ref, ref_shards, number=lambda j: int(numbers[n_cur + j]))
    return cur, ref


class _Stages:
    """Wall time and peak RSS per stage of one audit, sampled in a thread (every 0.2 s):
    the driver's RSS, attributed to the stage running, and the peak RSS of every process
    the driver started (Ray's GCS, raylet and workers for ``--engine ray``)."""

    def __init__(self) -> None:
        import threading

        self.stage = "start-up"
        self.seconds: dict[str, float] = {}
        self.driver_peak: dict[str, int] = {}
        self.children: dict[str, int] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        outer, self.stage = self.stage, stage
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0
            self._sample()
            print(
                f"  {stage}: {time.perf_counter() - t0:.1f} s, driver RSS peak {self.driver_peak.get(stage, 0)} MiB",
                file=sys.stderr,
                flush=True,
            )
            self.stage = outer

    def _sample(self) -> None:
        rss = _rss_mb(os.getpid(), "VmRSS")
        self.driver_peak[self.stage] = max(self.driver_peak.get(self.stage, 0), rss)
        for pid, name in _descendants(os.getpid()).items():
            self.children[f"{pid}:{name}"] = max(self.children.get(f"{pid}:{name}", 0), _rss_mb(pid, "VmRSS"))

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def _rss_mb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _descendants(root: int) -> dict[int, str]:
    """pid -> command (first 48 characters) of every live descendant of ``root``."""
    parent: dict[int, int] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    out: dict[int, str] = {}
    frontier = [root]
    while frontier:
        p = frontier.pop()
        for child, par in parent.items():
            if par == p and child not in out:
                try:
                    with open(f"/proc/{child}/cmdline", "rb") as f:
                        argv0 = f.read().decode(errors="replace").split("\0")[0]
                except OSError:
                    continue
                if not argv0:
                    continue  # exited between the two reads
                # ray::Name for Ray's workers, else the program's file name (raylet, gcs_server)
                out[child] = argv0[:48] if argv0.startswith("ray::") else os.path.basename(argv0)[:48]
                frontier.append(child)
    return out


def audit_bench(args: argparse.Namespace) -> None:
    """The CLI audit end to end, with every stage timed (see the module docstring)."""
    os.environ.setdefault("AUDITOR_CACHE_KEY", "bench-key-0123456789abcdef012345")
    t_in = time.perf_counter()
    cur, ref = audit_inputs(args.out, args.records, args.reference_records, args.shards)
    print(f"inputs ready ({time.perf_counter() - t_in:.0f} s): {cur} {ref}", flush=True)
    cache_dir = args.cache_dir or args.out / "cache"
    results: dict[str, Any] = {}
    for engine in args.engines.split(","):
        results[engine] = _audit_once(args, engine, cur, ref, cache_dir)
        print(engine, json.dumps(results[engine], indent=1), flush=True)
    summary = {
        "records": args.records,
        "reference_records": args.reference_records,
        "model": args.model,
        "shards": args.shards,
        "cpus": os.cpu_count(),
        **results,
    }
    if args.results is not None:
        old = json.loads(args.results.read_text()) if args.results.exists() else {}
        old.setdefault("audit", {})[f"{args.records}+{args.reference_records}"] = summary
        args.results.write_text(json.dumps(old, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def _audit_once(
    args: argparse.Namespace, engine: str, cur: Path, ref: Path, cache_dir: Path
) -> dict[str, Any]:
    """One ``auditor audit`` through the CLI with every stage wrapped in a timer."""
    import dataclasses

    import auditor.api as api
    import auditor.engine.ray_engine as re_mod
    import auditor.report as report_mod
    from auditor import checks
    from auditor.cli import main as cli_main

    st = _Stages()
    sides = iter(["current", "reference"])
    embeds = iter(["reference", "current"])

    def wrap(fn: Callable[..., Any], label: Callable[[], str]) -> Callable[..., Any]:
        def inner(*a: Any, **k: Any) -> Any:
            with st.timed(label()):
                return fn(*a, **k)

        return inner

    saved = (api.load_batch, api.snapshot_of, report_mod.write_reports, dict(checks._REGISTRY))
    api.load_batch = wrap(api.load_batch, lambda: f"read {next(sides)}")  # type: ignore[assignment]
    api.snapshot_of = wrap(api.snapshot_of, lambda: f"embed {next(embeds)}")  # type: ignore[assignment]
    report_mod.write_reports = wrap(report_mod.write_reports, lambda: "write reports")  # type: ignore[assignment]
    for name, spec in checks.registry().items():
        checks._REGISTRY[name] = dataclasses.replace(spec, func=wrap(spec.func, lambda n=name: f"check {n}"))
    saved_prefill = re_mod.prefill
    if engine == "ray":
        re_mod.prefill = wrap(re_mod.prefill, lambda: "embed both on ray (prefill)")  # type: ignore[assignment]
    out_dir = args.out / f"report-{engine}-{args.records}"
    argv = [
        "audit", str(cur), "--reference", str(ref), "--model", args.model, "--cache-dir", str(cache_dir),
        "--out", str(out_dir), "--engine", engine, "--quiet",
    ] + (["--rules", str(args.rules)] if args.rules else [])  # fmt: skip
    t0 = time.perf_counter()
    code: object = 0
    try:
        with st.timed("total"):
            cli_main(argv)
    except SystemExit as e:
        code = e.code
    finally:
        st.stop()
        api.load_batch, api.snapshot_of, report_mod.write_reports = saved[:3]  # type: ignore[assignment]
        checks._REGISTRY.clear()
        checks._REGISTRY.update(saved[3])
        re_mod.prefill = saved_prefill  # type: ignore[assignment]
    wall = time.perf_counter() - t0
    report = json.loads((out_dir / "report.json").read_text()) if (out_dir / "report.json").exists() else {}
    total = st.seconds.pop("total")
    result = {
        "exit_code": code,
        "status": report.get("status"),
        "wall_s": round(wall, 1),
        "stage_s": {k: round(v, 1) for k, v in st.seconds.items()},
        "other_s": round(total - sum(st.seconds.values()), 1),
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "driver_rss_mb_by_stage": {k: v for k, v in st.driver_peak.items() if k != "total"},
        "child_peak_rss_mb": dict(sorted(st.children.items(), key=lambda kv: -kv[1])),
        "findings": dict(
            Counter(f"{f.get('check')}:{f.get('severity')}" for f in report.get("findings", []))
        ),
        "notes": [o.get("reason") for o in report.get("outcomes", []) if o.get("reason")],
    }
    return result


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
