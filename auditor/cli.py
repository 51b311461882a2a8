"""auditor's command line: a thin Typer shell over the library.

Parse, call the library, render, exit with the report's exit code.  Errors are turned
into exit codes in one place (``main``): user and environment errors (AuditorError,
OSError) exit 2 with one line, an unexpected exception exits 3 with one line and a
pointer to ``--debug``; neither may ever read as 0 or 1 (the gate's verdicts).  Paths
are checked before any heavy module is imported, so a typo costs well under a second.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

from auditor import __version__
from auditor.errors import AuditorError

EXIT_INTERNAL = 3

class _Command(typer.core.TyperCommand):
    """Usage lines as click writes them (``CURRENT``), not typer's ``{CURRENT}``, which
    reads like a placeholder for a set of choices."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [re.sub(r"^\{(.*)\}(\.\.\.)?$", r"\1\2", p) for p in super().collect_usage_pieces(ctx)]


app = typer.Typer(
    name="auditor",
    help=(
        "Audit model-generated or model-curated training data before you train on it.\n\n"
        "auditor embeds a batch, compares it with a reference set (or an earlier curation "
        "round) and looks for drift, over- and under-selected topics, trigger phrases, "
        "near-duplicate amplification and flipped responses, naming the records involved "
        "with p-values.\n\n"
        "Exit codes: 0 pass (warnings allowed), 1 the gate failed, 2 usage, input or environment "
        "error (nothing written), 3 internal error (a bug: rerun with --debug for the traceback).\n\n"
        "Start with:  auditor audit sample_data/alpaca_sample.jsonl --reference "
        "sample_data/seed_tasks.jsonl --out out/"
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


# --------------------------------------------------------------------------------------
# path checks that run before any heavy import (auditor/io.py reads the files later; these
# only make sure a typo or a wrong kind of path costs milliseconds, not a model load)

# io.py's formats, repeated so a bad path is refused before polars loads;
# tests/test_exit_codes.py checks that io.load accepts every one of them.
INPUT_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson", ".json", ".csv")  # each also gzipped
_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_SUPPORTED = (
    ".jsonl, .ndjson, .json, .csv (each also gzipped, .gz), .parquet, .arrow, "
    "a folder written by datasets.Dataset.save_to_disk, a folder of such shards or a glob"
)


def _known_suffix(name: str) -> bool:
    name = name.lower()
    if name.endswith((".parquet", ".arrow")):
        return True
    base = name[:-3] if name.endswith(".gz") else name
    return base.endswith(INPUT_SUFFIXES)


def check_input(path: Path) -> None:
    """Raise AuditorError unless ``path`` is a readable data file of a known format or a
    datasets folder, a folder of shards or a glob matching shards.  Never opens a FIFO or
    device (reading one could hang the gate)."""
    from auditor import shards  # standard library only: still no heavy import

    label = str(path)
    if shards.is_pattern(path):
        for shard in shards.shards_of(path) or ():
            check_input(shard)
        return
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AuditorError(f"{label}: file not found (no such file or folder)") from None
    except OSError as err:
        raise AuditorError(f"{label}: cannot read ({err.strerror or err})") from None
    if stat.S_ISDIR(st.st_mode):
        if not os.access(path, os.R_OK | os.X_OK):
            raise AuditorError(f"{label}: cannot read (permission denied)")
        if not any((path / m).is_file() for m in _DATASET_MARKERS):
            # a folder of shards: every shard is checked as a file is
            for shard in shards.shards_of(path) or ():
                check_input(shard)
        return
    if not stat.S_ISREG(st.st_mode):
        raise AuditorError(f"{label}: not a regular file (expected a data file; supported: {_SUPPORTED})")
    if not _known_suffix(path.name):
        found = "".join(path.suffixes[-2:]) or "no extension"
        raise AuditorError(f"{label}: unknown file type '{found}' (supported: {_SUPPORTED})")
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise AuditorError(f"{label}: cannot read ({err.strerror or err})") from None


def _check_creatable(path: Path, option: str) -> None:
    """``path`` does not exist: its nearest existing ancestor must be a writable folder."""
    anc = path.absolute().parent
    while not (anc.exists() or anc.is_symlink()) and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise AuditorError(f"{option} {path}: cannot be created ({anc} is not a folder)")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise AuditorError(f"{option} {path}: cannot be created ({anc} is not writable)")


def check_output_dir(path: Path, option: str = "--out") -> None:
    """Raise AuditorError unless ``path`` is a writable folder or can be created as one."""
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise AuditorError(
                f"{option} {path}: exists and is not a folder (expected a folder for the reports)"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise AuditorError(f"{option} {path}: folder is not writable")
        return
    _check_creatable(path, option)


def check_output_file(path: Path, option: str) -> None:
    """Raise AuditorError unless ``path`` can be written as a file (atomically: a temporary
    file in its folder replaces it, so the folder must be writable)."""
    if path.is_dir():
        raise AuditorError(f"{option} {path}: is a folder (expected a file name)")
    if (path.exists() or path.is_symlink()) and not path.is_file():
        raise AuditorError(f"{option} {path}: exists and is not a regular file")
    parent = path.absolute().parent
    if parent.exists():
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise AuditorError(f"{option} {path}: cannot be written ({parent} is not a writable folder)")
    else:
        _check_creatable(parent, option)


def check_rules_path(path: Path) -> None:
    """Raise AuditorError unless ``path`` is an existing regular file (a FIFO would hang)."""
    if not path.exists():
        raise AuditorError(f"{path}: rules file not found")
    if not path.is_file():
        raise AuditorError(f"{path}: rules file is not a regular file")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"auditor {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="Print the traceback of an internal error (exit 3); also AUDITOR_DEBUG=1.",
        ),
    ] = False,
    verbose: Annotated[
        int,
        typer.Option("--verbose", "-v", count=True, help="More log lines on stderr (what was read, timings)."),
    ] = 0,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Only warnings and errors on stderr: no progress, no summary."),
    ] = False,
) -> None:
    """Options for every command; main() reads --debug itself, since it must work even when
    parsing fails.  Log lines (the ``auditor`` logger) go to stderr, never stdout."""
    from auditor.progress import configure_logging

    configure_logging(verbose, quiet=quiet)


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


def _rules_path(value: Path | None) -> Path | None:
    if value is not None:
        check_rules_path(value)
    return value


def _junit_path(value: Path | None) -> Path | None:
    if value is not None:
        check_output_file(value, "--junit")
    return value


RulesOpt = Annotated[
    Path | None,
    typer.Option(
        "--rules",
        callback=_rules_path,
        help="Rules YAML replacing rules/default.yaml (which checks run, how graded).",
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice; recorded in the report.")]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="A local model directory written as a path (./m, /opt/m, ~/m): sentence-transformers or "
        "model2vec format; 'static' for the fast 64-d static model of auditor[fast]; 'distilled' for the "
        "256-d static model `auditor distill` builds from MiniLM. Default: the bundled "
        "all-MiniLM-L6-v2, every file sha256-verified, offline.",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
CacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Embedding cache, keyed by model fingerprint and content hash, each entry authenticated "
        "with a key outside the data (AUDITOR_CACHE_KEY or ~/.config/auditor/cache.key). "
        "Default: $XDG_CACHE_HOME/auditor (~/.cache/auditor). Keep it outside the audited checkout.",
    ),
]


EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Where embedding runs: local (this process) or ray (a Ray cluster; pip install "
        "'auditor[ray]'). The checks and grading run here either way; findings are the same.",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", help="Ray cluster to join with --engine ray (default: start a local Ray)."),
]


def _ray_prefill(
    data: Path,
    engine: str,
    ray_address: str | None,
    *,
    cache_dir: Path | None,
    model: str | None,
    device: str,
    text_fields: Sequence[str] | None,
) -> None:
    """With --engine ray: embed DATA's texts on the cluster into the cache first."""
    from auditor.engine import check_engine

    if check_engine(engine, ray_address) == "local":
        return
    if cache_dir is None:
        raise AuditorError("--engine ray with --no-cache: the cluster's vectors reach this run through the cache")
    from auditor.cache import EmbeddingCache
    from auditor.encoders import load_encoder
    from auditor.engine.ray_engine import RayEngine, encoder_factory

    encoder = load_encoder(model, device=device)
    with RayEngine(ray_address) as eng:
        eng.embed_file(
            data,
            encoder,
            EmbeddingCache(cache_dir),
            text_fields=text_fields,
            factory=encoder_factory(model, device),
        )


def _cache_dir(cache_dir: Path | None, no_cache: bool = False) -> Path | None:
    """The cache directory to use (None: no cache); resolved after the inputs are validated."""
    if no_cache:
        return None
    if cache_dir is not None:
        return cache_dir
    from auditor.cache import default_cache_dir

    return default_cache_dir()
PolicyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--policy",
        metavar="POLICY",
        help="The curation policy that explains removals: dedup:COS, lexical:JACCARD, "
        "filter:min_chars=N (max_chars, min_response_chars, max_response_chars), filter:empty=response, "
        "none, infer (default: inferred from the data). Repeat for several.",
    ),
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")]
BatchSizeOpt = Annotated[
    int, typer.Option("--batch-size", min=1, help="Encoder batch size (16-64 is fastest on CPU).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary on stderr.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print report.json to stdout (logs stay on stderr).")]
HtmlOpt = Annotated[bool, typer.Option("--html", help="Also write a self-contained report.html into --out.")]
JunitOpt = Annotated[
    Path | None,
    typer.Option(
        "--junit", callback=_junit_path, help="Write JUnit XML (one test case per rule) to this file."
    ),
]


def _stderr_console(quiet: bool):  # type: ignore[no-untyped-def]
    import logging

    from rich.console import Console

    # the global --quiet lowers the auditor logger; the summary follows it
    quiet = quiet or not logging.getLogger("auditor").isEnabledFor(logging.INFO)
    return Console(stderr=True, quiet=quiet)


def _write_stdout(text: str) -> None:
    """Write to stdout; a reader that closed the pipe early (``| head``) is not an error:
    the reports are already written and the verdict still decides the exit code."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # point stdout at /dev/null so the interpreter's final flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _finish(report, *, written, junit, json_out, quiet, header=None):  # type: ignore[no-untyped-def]
    """The common end of audit, diff and trend: JUnit, --json, the terminal table, the exit code."""
    from auditor.report import render_junit, render_terminal, to_json, write_text_atomic

    if junit is not None:
        write_text_atomic(junit, render_junit(report))
    if json_out:
        _write_stdout(to_json(report))
    console = _stderr_console(quiet)
    if header:
        console.print(header, highlight=False)
    render_terminal(report, console)
    if written:
        console.print(f"reports: {', '.join(str(p) for p in written.values())}", highlight=False)
    raise typer.Exit(report.exit_code)


@app.command(cls=_Command, short_help="Audit a batch against a reference; write report.json and report.md.")
def audit(
    current: Annotated[
        Path,
        typer.Argument(
            metavar="CURRENT",
            help="The batch under audit (.jsonl[.gz], .json, .csv, .parquet, or a datasets directory).",
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
    reference_text_field: Annotated[
        list[str] | None,
        typer.Option(
            "--reference-text-field",
            help="Field(s) to embed from the reference when they differ from --text-field (repeatable; "
            "default: the same as --text-field).",
        ),
    ] = None,
    embeddings_field: Annotated[
        str | None,
        typer.Option(
            "--embeddings-field",
            help="Field holding each record's precomputed vector (both inputs): the model is not loaded "
            "and the report names the model 'precomputed' with a sha256 of the vectors.",
        ),
    ] = None,
    id_field: IdFieldOpt = None,
    rules: RulesOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for report.json and report.md.")] = Path(
        "auditor-report"
    ),
    seed: SeedOpt = 0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    batch_size: BatchSizeOpt = 64,
    html: HtmlOpt = False,
    junit: JunitOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """Audit CURRENT against --reference (or a stored round: --store DIR --baseline NAME);
    write DIR/report.json and DIR/report.md.

    Example:  auditor audit generated.jsonl -r seed_tasks.jsonl -t instruction --out out/
    """
    from auditor.rules import load_rules

    if baseline is not None or store is not None:
        if reference is not None:
            raise AuditorError("audit: give either --reference FILE or --store DIR --baseline NAME, not both")
        if baseline is None or store is None:
            raise AuditorError("audit: --store DIR and --baseline NAME go together")
    elif reference is None:
        raise AuditorError("audit: --reference FILE (or --store DIR --baseline NAME) is required")
    # everything a user can get wrong is checked before the first heavy import
    check_input(current)
    if reference is not None:
        check_input(reference)
    check_output_dir(out, "--out")
    from auditor.engine import check_engine

    check_engine(engine, ray_address)
    ruleset = load_rules(rules)
    if baseline is not None and embeddings_field is not None:
        raise AuditorError("audit: --embeddings-field needs --reference FILE (a stored round is already embedded)")
    if quiet:
        from auditor.progress import configure_logging

        configure_logging(quiet=True)

    from auditor.api import run_audit
    from auditor.progress import Progress
    from auditor.report import write_reports

    baseline_snap = None
    if baseline is not None and store is not None:
        from auditor.store import Store

        baseline_snap = Store.open(store).load(baseline)  # checked against its manifest
    with Progress(quiet=quiet) as progress:
        run = run_audit(
            current,
            baseline_snap if baseline_snap is not None else reference,
            text_fields=text_field,
            reference_text_fields=reference_text_field,
            id_field=id_field,
            embeddings=embeddings_field,
            rules=ruleset,
            seed=seed,
            model=model,
            device=device,
            cache_dir=_cache_dir(cache_dir, no_cache or embeddings_field is not None),
            batch_size=batch_size,
            progress=progress,
            engine=engine,
            ray_address=ray_address,
        )
    written = write_reports(run.report, out, ref=run.reference, cur=run.current, html=html)
    _finish(run.report, written=written, junit=junit, json_out=json_out, quiet=quiet)


@app.command(cls=_Command, short_help="List the checks, their parameters and valid ranges.")
def checks() -> None:
    """List the checks a rules file can use, with their parameters, defaults and valid ranges."""
    from auditor.checks import registry
    from auditor.rules import PARAMS

    for name, spec in sorted(registry().items()):
        typer.echo(f"{name}\n    {spec.description}")
        ranges = PARAMS.get(name, {})
        for key, default in spec.defaults.items():
            valid = f"  ({ranges[key].describe()})" if key in ranges else ""
            typer.echo(f"    {key}={default!r}{valid}")
        if not spec.defaults:
            typer.echo("    no parameters")
        typer.echo("")


@app.command("distill", cls=_Command, short_help="Build the fast static model distilled from MiniLM.")
def distill_cmd(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the model here instead (use it as --model PATH); default: the folder "
            "--model distilled reads ($XDG_CACHE_HOME/auditor-models/minilm-distilled-256).",
        ),
    ] = None,
) -> None:
    """Distil a 256-d static model from the bundled all-MiniLM-L6-v2, offline (about 1-2
    minutes on two cores), so that --model distilled embeds 100x+ faster than MiniLM on a CPU.

    The result's fingerprint is checked against the pinned one; --model distilled refuses any
    other.  Example:  auditor distill && auditor embed big.jsonl --model distilled
    """
    from auditor.distill import distill

    if out is not None:
        check_output_dir(out)
    res = distill(out, progress=lambda msg: typer.echo(msg, err=True))
    state = "matches the pinned fingerprint" if res.pinned else "differs from the pinned fingerprint"
    typer.echo(f"{res.path}: {res.vocab} tokens x {res.dims} dims in {res.seconds:.0f} s; sha256 {res.fingerprint} ({state})")
    if not res.pinned and out is None:
        raise AuditorError(
            f"{res.path}: the distilled model's fingerprint {res.fingerprint} differs from the pinned one, "
            "so --model distilled will refuse it (this platform computes different low bits); use "
            f"--model {res.path} to audit with it under its own fingerprint"
        )


@app.command("embed", cls=_Command, short_help="Embed a file into the cache in bounded memory.")
def embed_cmd(
    data: Annotated[
        Path, typer.Argument(help="Records to embed (.jsonl[.gz] and .parquet stream; others load whole).")
    ],
    text_field: TextFieldOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
    batch_size: BatchSizeOpt = 64,
    chunk: Annotated[
        int, typer.Option("--chunk", min=1, help="Records read and embedded at a time (bounds memory).")
    ] = 8192,
    quiet: QuietOpt = False,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """Embed DATA into the cache in chunks, so later audits of it start warm.

    Memory stays bounded however large DATA is; an interrupted run resumes where it
    stopped (what is cached is never embedded again).

    Example:  auditor embed big.jsonl --model static
    """
    check_input(data)
    from auditor.engine import check_engine

    check_engine(engine, ray_address)

    from auditor.cache import EmbeddingCache
    from auditor.embed import embed_file
    from auditor.encoders import load_encoder
    from auditor.progress import Progress

    cache_dir = _cache_dir(cache_dir)
    assert cache_dir is not None
    encoder = load_encoder(model, device=device)
    total = None
    if data.suffix in (".jsonl", ".ndjson"):
        with open(data, "rb") as f:
            total = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))
    with Progress(quiet=quiet) as progress:
        advance = progress.task(f"embedding {data.name}", total or 0)
        if engine == "ray":
            from auditor.engine.ray_engine import RayEngine, encoder_factory

            with RayEngine(ray_address, batch_size=batch_size) as eng:
                result = eng.embed_file(
                    data,
                    encoder,
                    EmbeddingCache(cache_dir),
                    text_fields=text_field,
                    chunk=chunk,
                    factory=encoder_factory(model, device),
                    progress=advance,
                )
        else:
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
# curation rounds (auditor/curation.py)

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


@app.command("snapshot", cls=_Command, short_help="Record a file as a named curation round in a store.")
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
    cache_dir: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    batch_size: BatchSizeOpt = 64,
    quiet: QuietOpt = False,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """Record DATA as curation round NAME in the store (manifest, embeddings, records).

    Example:  auditor snapshot round2.jsonl --store rounds/ --name round2 --parent round1
    """
    check_input(data)
    # the round's texts are embedded on the cluster into the cache; the snapshot reads them
    _ray_prefill(
        data,
        engine,
        ray_address,
        cache_dir=_cache_dir(cache_dir, no_cache),
        model=model,
        device=device,
        text_fields=text_field,
    )
    from auditor.curation import snapshot
    from auditor.progress import Progress

    with Progress(quiet=quiet) as progress:
        m = snapshot(
            data,
            store,
            name,
            parent=parent,
            text_fields=text_field,
            id_field=id_field,
            rules=rules,
            basis_k=basis_k,
            seed=seed,
            model=model,
            device=device,
            cache_dir=_cache_dir(cache_dir, no_cache),
            batch_size=batch_size,
            progress=progress,
        )
    typer.echo(
        f"{m.name}: {m.n_records} records, parent {m.parent or '-'}, "
        f"{len(m.cluster_counts)} basis clusters, manifest sha256 {m.sha256}"
    )


@app.command("history", cls=_Command, short_help="List a store's rounds and what each changed.")
def history_cmd(
    store: StoreReq,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify", help="Recompute every hash; exit 1 naming the first broken snapshot or file."
        ),
    ] = False,
    head: Annotated[
        str | None,
        typer.Option(
            "--head",
            metavar="SHA256",
            help="With --verify: the head manifest sha256 pinned earlier (history prints it); exit 1 "
            "unless that manifest is still in the store unchanged (catches a rewritten or "
            "re-parented head round and removed newest rounds).",
        ),
    ] = None,
    seed: SeedOpt = 0,
    permutations: PermutationsOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rounds as JSON to stdout.")] = False,
) -> None:
    """The rounds in creation order: counts, what changed and drift from each round's parent.

    Example:  auditor history --store rounds/ --verify --head 3f2a...
    """
    import json

    from auditor.curation import history

    result = history(
        store, seed=seed, n_permutations=permutations or 999, verify=verify or head is not None, head=head
    )
    if result.problems:
        typer.echo(f"error: store {store} was altered; first broken: {result.problems[0]}", err=True)
        for problem in result.problems[1:]:
            typer.echo(f"  also: {problem}", err=True)
        raise typer.Exit(1)
    rows = result.rows
    if json_out:
        _write_stdout(json.dumps(result.to_dict(), indent=2) + "\n")
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
        typer.echo(f"head manifest sha256: {result.head or '-'}")
    if result.verified:
        typer.echo(f"verified: {len(rows)} snapshots, every hash and the chain order intact", err=True)
        if result.after_pinned is not None:
            typer.echo(f"pinned head found; {result.after_pinned} round(s) added after it", err=True)


@app.command("diff", cls=_Command, short_help="What round B changed relative to round A.")
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
    policy: PolicyOpt = None,
    junit: JunitOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """What round B changed relative to round A: records added/removed/kept, clusters that
    gained or lost share, drift; report.json (same schema and exit codes as audit),
    report.md and diff.md (for the pull request).

    Example:  auditor diff round1 round2 --store rounds/ --out diff/
    """
    check_output_dir(out, "--out")
    from auditor.curation import diff
    from auditor.policy import parse_policy

    declared = parse_policy(policy)  # a bad --policy is refused before any work
    from auditor.progress import Progress
    from auditor.report import write_reports, write_text_atomic
    from auditor.report.rounds import render_diff

    with Progress(quiet=quiet) as progress:
        result = diff(
            store, a, b, rules=rules, seed=seed, n_permutations=permutations, progress=progress, policy=declared
        )
    written = write_reports(result.report, out)
    written["diff"] = write_text_atomic(out / "diff.md", render_diff(result))
    _finish(result.report, written=written, junit=junit, json_out=json_out, quiet=quiet)


@app.command("trend", cls=_Command, short_help="Slow drift along a chain of rounds.")
def trend_cmd(
    store: StoreReq,
    name: Annotated[
        str | None, typer.Option("--name", help="Last round of the chain (default: the newest snapshot).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Also write report.json and report.md here.")
    ] = None,
    rules: Annotated[
        Path | None,
        typer.Option(
            "--rules", callback=_rules_path, help="A rules file whose policy: list applies when --policy is not given."
        ),
    ] = None,
    seed: SeedOpt = 0,
    permutations: PermutationsOpt = None,
    policy: PolicyOpt = None,
    junit: JunitOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Slow drift along the chain root -> ... -> NAME: each round against the root and its
    parent, and whether the rounds keep moving one way.  Exit 1 when a test fails.

    Example:  auditor trend --store rounds/
    """
    if out is not None:
        check_output_dir(out, "--out")
    from auditor.curation import trend
    from auditor.policy import parse_policy
    from auditor.report import write_reports

    declared = parse_policy(policy)
    result = trend(store, name, seed=seed, n_permutations=permutations, policy=declared, rules=rules)
    written = write_reports(result.report, out) if out is not None else {}
    _finish(
        result.report,
        written=written,
        junit=junit,
        json_out=json_out,
        quiet=quiet,
        header="chain: " + " -> ".join(result.chain),
    )


@app.command("selfinstruct", cls=_Command, short_help="Audit a Self-Instruct pool against its seeds and eval sets.")
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
        typer.Option(
            "--rules",
            callback=_rules_path,
            help="Rules YAML replacing rules/selfinstruct.yaml (which checks run, how graded).",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for report.json and report.md.")] = Path(
        "auditor-report"
    ),
    seed: SeedOpt = 0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
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
    check_input(generated)
    check_input(seeds)
    for path in eval_files or ():
        check_input(path)
    check_output_dir(out, "--out")
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
            cache_dir=_cache_dir(cache_dir, no_cache),
            batch_size=batch_size,
            progress=progress,
        )
    written = write_reports(run.report, out, ref=run.reference, cur=run.current, html=html)
    _finish(run.report, written=written, junit=junit, json_out=json_out, quiet=quiet)


def _debug_requested(args: Sequence[str]) -> bool:
    if os.environ.get("AUDITOR_DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    for arg in args:  # global options come before the command's name
        if arg == "--debug":
            return True
        if not arg.startswith("-"):
            break
    return False


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point; the one place errors become exit codes.

    0 pass, 1 the gate failed (only ever from a Report), 2 usage / input / environment
    error (one line on stderr), 3 anything unexpected (one line; ``--debug`` or
    ``AUDITOR_DEBUG=1`` adds the traceback), 130 interrupted.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    try:
        # standalone_mode=False: click must not turn an EOFError into "Aborted!" and exit 1
        code = app(args=args, prog_name="auditor", standalone_mode=False)
    except typer.Abort as err:
        if isinstance(err.__cause__, KeyboardInterrupt):
            sys.stderr.write("aborted\n")
            sys.exit(130)
        _internal_error(err.__cause__ or err, debug)
    except typer.TyperException as err:
        # usage errors: click's own message; always 2 (some of its errors default to 1,
        # which is the gate's "failed")
        show = getattr(err, "show", None)
        if callable(show):
            show()
        else:
            sys.stderr.write(f"error: {err.format_message()}\n")
        sys.exit(2)
    except AuditorError as err:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    except OSError as err:
        # the environment (disk full, permissions, a vanished file): the data is not to blame
        if debug:
            traceback.print_exc()
        where = f"{err.filename}: " if err.filename else ""
        sys.stderr.write(f"error: {where}{err.strerror or err}\n")
        sys.exit(2)
    except MemoryError:
        if debug:
            traceback.print_exc()
        sys.stderr.write("error: out of memory (try a smaller batch or --batch-size)\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except Exception as err:
        _internal_error(err, debug)
    code = code if isinstance(code, int) else 0
    if code == 130:  # typer turns Ctrl-C into a silent Exit(130)
        sys.stderr.write("aborted\n")
    sys.exit(code)


def _internal_error(err: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(type(err), err, err.__traceback__)
    msg = " ".join(str(err).split())[:300]
    hint = "" if debug else " (run with --debug for the traceback)"
    sys.stderr.write(f"auditor: internal error: {type(err).__name__}: {msg}{hint}\n")
    sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
