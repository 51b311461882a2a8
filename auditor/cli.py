"""auditor's command line: a thin Typer shell over the library.

Parse, call the library, render, exit with the report's exit code.  User errors
(AuditorError) are caught in one place (``main``) and exit 2 with one line, no
traceback.  Heavy modules are imported inside commands so ``auditor --help`` is fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from auditor.errors import AuditorError

app = typer.Typer(
    name="auditor",
    help=(
        "Audit model-generated or model-curated training data before you train on it.\n\n"
        "auditor embeds a batch, compares it with a reference set (or an earlier curation "
        "round) and looks for drift, over- and under-selected topics, trigger phrases, "
        "near-duplicate amplification and flipped responses, naming the records involved "
        "with p-values.\n\n"
        "Exit codes: 0 pass (warnings allowed), 1 the gate failed, 2 usage or input error.\n\n"
        "Start with:  auditor audit sample_data/alpaca_sample.jsonl --reference "
        "sample_data/seed_tasks.jsonl --out out/"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

TextFieldOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--text-field",
        "-t",
        help="Field to embed; repeat to join several with a newline. Dotted paths reach nested "
        "values: 'instances.0.output'; 'instances.*.output' joins every element. Default: "
        "recognise text / messages / instruction+input+output / prompt+completion.",
    ),
]
IdFieldOpt = Annotated[
    str | None,
    typer.Option("--id-field", help="Field holding record ids (default: a short hash of the text)."),
]
RulesOpt = Annotated[
    Path | None,
    typer.Option("--rules", help="Rules YAML replacing rules/default.yaml (which checks run, how graded)."),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice; recorded in the report.")]
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="Local sentence-transformers model directory, a model2vec-format static model directory, "
        "or 'static' for the fast static model of auditor[fast] (default: the bundled all-MiniLM-L6-v2, "
        "sha256-verified, offline).",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
CacheOpt = Annotated[
    Path, typer.Option("--cache-dir", help="Embedding cache (keyed by model and content hash).")
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")]
BatchSizeOpt = Annotated[
    int, typer.Option("--batch-size", min=1, help="Encoder batch size (16-64 is fastest on CPU).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary on stderr.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print report.json to stdout (logs stay on stderr).")]
HtmlOpt = Annotated[bool, typer.Option("--html", help="Also write a self-contained report.html into --out.")]
JunitOpt = Annotated[
    Path | None, typer.Option("--junit", help="Write JUnit XML (one test case per rule) to this file.")
]


def _stderr_console(quiet: bool):  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=True, quiet=quiet)


def _finish(report, *, written, junit, json_out, quiet, header=None):  # type: ignore[no-untyped-def]
    """The common end of audit, diff and trend: JUnit, --json, the terminal table, the exit code."""
    from auditor.report import render_junit, render_terminal, to_json, write_text_atomic

    if junit is not None:
        write_text_atomic(junit, render_junit(report))
    if json_out:
        sys.stdout.write(to_json(report))
    console = _stderr_console(quiet)
    if header:
        console.print(header, highlight=False)
    render_terminal(report, console)
    if written:
        console.print(f"reports: {', '.join(str(p) for p in written.values())}", highlight=False)
    raise typer.Exit(report.exit_code)


@app.command()
def audit(
    current: Annotated[
        Path,
        typer.Argument(
            help="The batch under audit (.jsonl[.gz], .json, .csv, .parquet, or a datasets directory)."
        ),
    ],
    reference: Annotated[
        Path | None, typer.Option("--reference", "-r", help="Reference data the batch should resemble.")
    ] = None,
    store: Annotated[
        Path | None, typer.Option("--store", help="Curation-round store holding the --baseline round.")
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline", help="Audit against this stored round (with --store) instead of --reference."
        ),
    ] = None,
    text_field: TextFieldOpt = None,
    id_field: IdFieldOpt = None,
    rules: RulesOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for report.json and report.md.")] = Path(
        "auditor-report"
    ),
    seed: SeedOpt = 0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = Path(".auditor/cache"),
    no_cache: NoCacheOpt = False,
    batch_size: BatchSizeOpt = 64,
    html: HtmlOpt = False,
    junit: JunitOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Audit CURRENT against --reference (or a stored round: --store DIR --baseline NAME);
    write DIR/report.json and DIR/report.md.

    Example:  auditor audit generated.jsonl -r seed_tasks.jsonl -t instruction --out out/
    """
    from auditor.api import run_audit
    from auditor.progress import Progress
    from auditor.report import write_reports

    if baseline is not None or store is not None:
        if reference is not None:
            raise AuditorError("audit: give either --reference FILE or --store DIR --baseline NAME, not both")
        if baseline is None or store is None:
            raise AuditorError("audit: --store DIR and --baseline NAME go together")
    elif reference is None:
        raise AuditorError("audit: --reference FILE (or --store DIR --baseline NAME) is required")
    baseline_snap = None
    if baseline is not None and store is not None:
        from auditor.store import Store

        baseline_snap = Store.open(store).load(baseline)  # checked against its manifest
    with Progress(quiet=quiet) as progress:
        run = run_audit(
            current,
            baseline_snap if baseline_snap is not None else reference,
            text_fields=text_field,
            id_field=id_field,
            rules=rules,
            seed=seed,
            model=model,
            device=device,
            cache_dir=None if no_cache else cache_dir,
            batch_size=batch_size,
            progress=progress,
        )
    written = write_reports(run.report, out, ref=run.reference, cur=run.current, html=html)
    _finish(run.report, written=written, junit=junit, json_out=json_out, quiet=quiet)


@app.command()
def checks() -> None:
    """List the checks a rules file can use, with their parameters and defaults."""
    from auditor.checks import registry

    for name, spec in sorted(registry().items()):
        params = ", ".join(f"{k}={v!r}" for k, v in spec.defaults.items()) or "no parameters"
        typer.echo(f"{name}\n    {spec.description}\n    params: {params}\n")


@app.command("embed")
def embed_cmd(
    data: Annotated[
        Path, typer.Argument(help="Records to embed (.jsonl[.gz] and .parquet stream; others load whole).")
    ],
    text_field: TextFieldOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = Path(".auditor/cache"),
    batch_size: BatchSizeOpt = 64,
    chunk: Annotated[
        int, typer.Option("--chunk", min=1, help="Records read and embedded at a time (bounds memory).")
    ] = 8192,
    quiet: QuietOpt = False,
) -> None:
    """Embed DATA into the cache in chunks, so later audits of it start warm.

    Memory stays bounded however large DATA is; an interrupted run resumes where it
    stopped (what is cached is never embedded again).

    Example:  auditor embed big.jsonl --model static
    """
    from auditor.embed import EmbeddingCache, embed_file, load_encoder
    from auditor.progress import Progress

    encoder = load_encoder(model, device=device)
    total = None
    if data.suffix in (".jsonl", ".ndjson"):
        with open(data, "rb") as f:
            total = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))
    with Progress(quiet=quiet) as progress:
        advance = progress.task(f"embedding {data.name}", total or 0)
        result = embed_file(
            data,
            encoder,
            EmbeddingCache(cache_dir),
            text_fields=text_field,
            chunk=chunk,
            batch_size=batch_size,
            progress=advance,
        )
    rate = result.n_encoded / result.seconds if result.seconds > 0 else 0.0
    typer.echo(
        f"{result.n_records} records, {result.n_unique} distinct texts: {result.n_cached} already cached, "
        f"{result.n_encoded} embedded with {encoder.name} in {result.seconds:.1f} s ({rate:.0f}/s) -> {cache_dir}"
    )


# --------------------------------------------------------------------------------------
# curation rounds (auditor/store.py, auditor/history.py)

StoreReq = Annotated[
    Path, typer.Option("--store", help="Curation-round store directory (the first snapshot creates it).")
]
PermutationsOpt = Annotated[
    int | None,
    typer.Option(
        "--permutations",
        min=99,
        help="Permutations per round-drift / trend test (default: enough to reach the gate's threshold "
        "ten times over, at least 999).",
    ),
]


@app.command("snapshot")
def snapshot_cmd(
    data: Annotated[Path, typer.Argument(help="This round's records (any format audit reads).")],
    store: StoreReq,
    name: Annotated[str, typer.Option("--name", help="Name of this round (letters, digits, '.', '_', '-').")],
    parent: Annotated[
        str | None, typer.Option("--parent", help="The stored round this one refines (omit for a root).")
    ] = None,
    text_field: TextFieldOpt = None,
    id_field: IdFieldOpt = None,
    rules: Annotated[
        Path | None,
        typer.Option("--rules", help="Rules whose prompt/response views to embed and store (default rules)."),
    ] = None,
    basis_k: Annotated[
        int | None,
        typer.Option(
            "--basis-k",
            min=1,
            help="Clusters in the store's fixed basis (first snapshot only; default n/40, 2-64).",
        ),
    ] = None,
    seed: SeedOpt = 0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = Path(".auditor/cache"),
    no_cache: NoCacheOpt = False,
    batch_size: BatchSizeOpt = 64,
    quiet: QuietOpt = False,
) -> None:
    """Record DATA as curation round NAME in the store (manifest, embeddings, records).

    Example:  auditor snapshot round2.jsonl --store rounds/ --name round2 --parent round1
    """
    from auditor.api import load_batch, snapshot_of
    from auditor.embed import load_encoder
    from auditor.progress import Progress
    from auditor.rules import load_rules
    from auditor.store import Store

    st = Store.create(store)
    names = st.names()
    # fail before the (slow) embedding; add_snapshot checks again under the lock
    if name in names:
        raise AuditorError(f"--name: snapshot {name!r} already exists in {store}")
    if parent is not None and parent not in names:
        raise AuditorError(
            f"--parent: no snapshot named {parent!r} in {store} (snapshots: {', '.join(names) or 'none yet'})"
        )
    batch = load_batch(data, text_field, id_field)
    views = sorted(load_rules(rules).needs())
    encoder = load_encoder(model, device=device)
    with Progress(quiet=quiet) as progress:
        snap = snapshot_of(
            batch,
            encoder,
            cache_dir=None if no_cache else cache_dir,
            views=views,
            batch_size=batch_size,
            progress=progress,
        )
    m = st.add_snapshot(snap, name, parent=parent, basis_k=basis_k, seed=seed)
    typer.echo(
        f"{m.name}: {m.n_records} records, parent {m.parent or '-'}, "
        f"{len(m.cluster_counts)} basis clusters, manifest sha256 {m.sha256}"
    )


@app.command("history")
def history_cmd(
    store: StoreReq,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify", help="Recompute every hash; exit 1 naming the first broken snapshot or file."
        ),
    ] = False,
    seed: SeedOpt = 0,
    permutations: PermutationsOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rounds as JSON to stdout.")] = False,
) -> None:
    """The rounds in creation order: counts, what changed and drift from each round's parent.

    Example:  auditor history --store rounds/ --verify
    """
    import json

    from auditor.history import history_rows
    from auditor.store import Store

    st = Store.open(store)
    if verify:
        problems = st.verify()
        if problems:
            typer.echo(f"error: store {store} was altered; first broken: {problems[0]}", err=True)
            for problem in problems[1:]:
                typer.echo(f"  also: {problem}", err=True)
            raise typer.Exit(1)
    rows = history_rows(st, seed=seed, n_permutations=permutations or 999)
    if json_out:
        sys.stdout.write(json.dumps({"head": st.head(), "rounds": rows}, indent=2) + "\n")
    else:
        typer.echo(
            f"{'#':>3}  {'round':<20} {'parent':<20} {'records':>8} {'added':>7} {'removed':>8} "
            f"{'drift SD':>9} {'drift p':>9}  created"
        )
        for r in rows:
            p = "-" if r["drift_p"] is None else f"{r['drift_p']:.3g}"
            eff = "-" if r["drift_effect_sd"] is None else f"{r['drift_effect_sd']:.3f}"
            typer.echo(
                f"{r['seq']:>3}  {r['name']:<20} {r['parent'] or '-':<20} {r['n_records']:>8} "
                f"{r['n_added'] if r['n_added'] is not None else '-':>7} "
                f"{r['n_removed'] if r['n_removed'] is not None else '-':>8} {eff:>9} {p:>9}  {r['created']}"
            )
        typer.echo(f"head manifest sha256: {st.head() or '-'}")
    if verify:
        typer.echo(f"verified: {len(rows)} snapshots, every hash and the chain order intact", err=True)


@app.command("diff")
def diff_cmd(
    a: Annotated[str, typer.Argument(help="The earlier stored round.")],
    b: Annotated[str, typer.Argument(help="The later stored round.")],
    store: StoreReq,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for report.json, report.md and diff.md.")
    ] = Path("auditor-diff"),
    rules: RulesOpt = None,
    seed: SeedOpt = 0,
    permutations: PermutationsOpt = None,
    junit: JunitOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """What round B changed relative to round A: records added/removed/kept, clusters that
    gained or lost share, drift; report.json (same schema and exit codes as audit),
    report.md and diff.md (for the pull request).

    Example:  auditor diff round1 round2 --store rounds/ --out diff/
    """
    from auditor.history import cluster_table, diff_markdown, diff_report
    from auditor.progress import Progress
    from auditor.report import write_reports, write_text_atomic
    from auditor.rules import load_rules
    from auditor.store import Store

    st = Store.open(store)
    ref, cur = st.load(a), st.load(b)
    ca, cb = st.clusters(a), st.clusters(b)
    basis = st.basis()
    ruleset = load_rules(rules)
    with Progress(quiet=quiet) as progress:
        report, d = diff_report(
            ref,
            cur,
            ruleset,
            seed=seed,
            basis=basis,
            a_clusters=ca,
            b_clusters=cb,
            n_permutations=permutations,
            progress=progress,
        )
    k = len(basis) if basis is not None else int(max(ca.max(initial=0), cb.max(initial=0)) + 1)
    md = diff_markdown(report, d, ref, cur, a_name=a, b_name=b, clusters=cluster_table(ca, cb, k))
    written = write_reports(report, out)
    written["diff"] = write_text_atomic(out / "diff.md", md)
    _finish(report, written=written, junit=junit, json_out=json_out, quiet=quiet)


@app.command("trend")
def trend_cmd(
    store: StoreReq,
    name: Annotated[
        str | None, typer.Option("--name", help="Last round of the chain (default: the newest snapshot).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Also write report.json and report.md here.")
    ] = None,
    seed: SeedOpt = 0,
    permutations: PermutationsOpt = None,
    junit: JunitOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Slow drift along the chain root -> ... -> NAME: each round against the root and its
    parent, and whether the rounds keep moving one way.  Exit 1 when a test fails.

    Example:  auditor trend --store rounds/
    """
    from auditor.history import trend_report
    from auditor.report import write_reports
    from auditor.store import Store

    st = Store.open(store)
    chain = st.chain(name)
    if len(chain) < 2:
        last = chain[-1].name if chain else "(empty store)"
        raise AuditorError(f"{store}: trend needs a chain of at least 2 rounds; {last} has no parent")
    snaps = [st.load(m.name) for m in chain]
    report = trend_report(snaps, [m.name for m in chain], seed=seed, n_permutations=permutations)
    written = write_reports(report, out) if out is not None else {}
    _finish(
        report,
        written=written,
        junit=junit,
        json_out=json_out,
        quiet=quiet,
        header="chain: " + " -> ".join(m.name for m in chain),
    )


@app.command("selfinstruct")
def selfinstruct_cmd(
    generated: Annotated[
        Path,
        typer.Argument(
            help="The generated pool: Alpaca-style array, Self-Instruct 'instances', Code Alpaca or "
            "GPTeacher records (.json, .jsonl, .parquet)."
        ),
    ],
    seeds: Annotated[Path, typer.Option("--seeds", "-s", help="The seed tasks the pool was bootstrapped from.")],
    eval_files: Annotated[
        list[Path] | None,
        typer.Option("--eval", help="An evaluation set the pool must not copy; repeat for several."),
    ] = None,
    id_field: IdFieldOpt = None,
    rules: Annotated[
        Path | None,
        typer.Option("--rules", help="Rules YAML replacing rules/selfinstruct.yaml (which checks run, how graded)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for report.json and report.md.")] = Path(
        "auditor-report"
    ),
    seed: SeedOpt = 0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = Path(".auditor/cache"),
    no_cache: NoCacheOpt = False,
    batch_size: BatchSizeOpt = 64,
    html: HtmlOpt = False,
    junit: JunitOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Audit a Self-Instruct-style GENERATED pool against its --seeds: ROUGE-L novelty, the
    pipeline's filters, verb-object diversity and --eval contamination (same report and
    exit codes as audit).

    Example:  auditor selfinstruct alpaca_data.json --seeds seed_tasks.jsonl --eval user_oriented.jsonl
    """
    from auditor.progress import Progress
    from auditor.report import write_reports
    from auditor.selfinstruct import run_selfinstruct

    with Progress(quiet=quiet) as progress:
        run = run_selfinstruct(
            generated,
            seeds,
            evals=eval_files or (),
            id_field=id_field,
            rules=rules,
            seed=seed,
            model=model,
            device=device,
            cache_dir=None if no_cache else cache_dir,
            batch_size=batch_size,
            progress=progress,
        )
    written = write_reports(run.report, out, ref=run.reference, cur=run.current, html=html)
    _finish(run.report, written=written, junit=junit, json_out=json_out, quiet=quiet)


def main() -> None:
    """Console-script entry point: usage errors exit 2 (click), AuditorError exits 2 here."""
    try:
        app()  # standalone: click reports usage errors itself and exits 2
    except AuditorError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("aborted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
