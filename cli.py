"""auditor's command line: a thin Typer shell over the library.

Parse, call the library, render, exit with the report's exit code.  User errors
(AuditorError) are caught in one place (``main``) and exit 2 with one line, no
traceback.  Heavy modules are imported inside commands so ``auditor --help`` is fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

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
    Optional[list[str]],
    typer.Option(
        "--text-field",
        "-t",
        help="Field to embed; repeat to join several with a newline. Dotted paths reach nested "
        "values: 'instances.0.output'; 'instances.*.output' joins every element. Default: "
        "recognise text / messages / instruction+input+output / prompt+completion.",
    ),
]
IdFieldOpt = Annotated[
    Optional[str],
    typer.Option("--id-field", help="Field holding record ids (default: a short hash of the text)."),
]
RulesOpt = Annotated[
    Optional[Path],
    typer.Option("--rules", help="Rules YAML replacing rules/default.yaml (which checks run, how graded)."),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice; recorded in the report.")]
ModelOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--model",
        help="Local sentence-transformers model directory (default: the bundled all-MiniLM-L6-v2, "
        "sha256-verified, offline).",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
CacheOpt = Annotated[
    Path, typer.Option("--cache-dir", help="Embedding cache (keyed by model and content hash).")
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Encoder batch size (16-64 is fastest on CPU).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary on stderr.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print report.json to stdout (logs stay on stderr).")]
HtmlOpt = Annotated[bool, typer.Option("--html", help="Also write a self-contained report.html into --out.")]
JunitOpt = Annotated[
    Optional[Path], typer.Option("--junit", help="Write JUnit XML (one test case per rule) to this file.")
]


def _stderr_console(quiet: bool):  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=True, quiet=quiet)


@app.command()
def audit(
    current: Annotated[Path, typer.Argument(help="The batch under audit (.jsonl[.gz], .json, .csv, .parquet, or a datasets directory).")],
    reference: Annotated[
        Optional[Path], typer.Option("--reference", "-r", help="Reference data the batch should resemble.")
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
    """Audit CURRENT against --reference; write DIR/report.json and DIR/report.md.

    Example:  auditor audit generated.jsonl -r seed_tasks.jsonl -t instruction --out out/
    """
    from auditor.api import run_audit
    from auditor.progress import Progress
    from auditor.report import render_terminal, to_json, write_junit, write_reports

    if reference is None:
        raise AuditorError("audit: --reference FILE is required")
    with Progress(quiet=quiet) as progress:
        run = run_audit(
            current,
            reference,
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
    report = run.report
    written = write_reports(report, out, ref=run.reference, cur=run.current, html=html)
    if junit is not None:
        write_junit(report, junit)
    if json_out:
        sys.stdout.write(to_json(report) + "\n")
    console = _stderr_console(quiet)
    render_terminal(report, console)
    console.print(f"reports: {', '.join(str(p) for p in written.values())}", highlight=False)
    raise typer.Exit(report.exit_code)


@app.command()
def checks() -> None:
    """List the checks a rules file can use, with their parameters and defaults."""
    from auditor.checks import registry

    for name, spec in sorted(registry().items()):
        params = ", ".join(f"{k}={v!r}" for k, v in spec.defaults.items()) or "no parameters"
        typer.echo(f"{name}\n    {spec.description}\n    params: {params}\n")


def main() -> None:
    """Console-script entry point: run the app, turning AuditorError into exit 2."""
    try:
        rc = app(standalone_mode=False)
    except AuditorError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    except typer.Exit as ex:
        sys.exit(ex.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except Exception as err:  # click usage errors arrive here in standalone_mode=False
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
