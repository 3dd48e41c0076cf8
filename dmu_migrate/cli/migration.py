"""Commands that move stored vectors: evolve, verify, status, history, rollback, prune."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dmu_migrate.cli.common import AsJson, PhaseBars, out, progress, user_errors
from dmu_migrate.cli.run_metrics import evolve_numbers, reported
from dmu_migrate.cli.settings import typed, with_settings
from dmu_migrate.evolve.settings import EvolveSettings

if TYPE_CHECKING:
    from dmu_migrate.api.migrate import EvolvePreview
    from dmu_migrate.evolve.run import EvolveResult

Uri = Annotated[
    str,
    typer.Option(
        help="Milvus Lite file (x.db), Milvus server (http://host:19530), Qdrant "
        "(http://host:6333, qdrant://host:PORT, qdrant:local/dir) or parquet:dir.",
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        help="Store credentials (Milvus user:password or token, Qdrant API key). Unset: "
        "DMU_TOKEN, else MILVUS_TOKEN for Milvus or QDRANT_API_KEY for Qdrant.",
        envvar="DMU_TOKEN",
        show_default=False,
    ),
]
TargetToken = Annotated[
    str | None,
    typer.Option(
        help="Credentials of the --target-uri store. Unset: DMU_TARGET_TOKEN, else "
        "MILVUS_TOKEN or QDRANT_API_KEY by the target's kind (never DMU_TOKEN).",
        envvar="DMU_TARGET_TOKEN",
        show_default=False,
    ),
]
Collection = Annotated[str, typer.Option(help="Collection or alias holding the old vectors.")]
Adapters = Annotated[
    list[Path],
    typer.Option(
        "--adapter",
        help="Artifact directory written by train; repeat to chain upgrades (oldest first).",
    ),
]


@reported("evolve", ("done", "remaining", "shard done"), "collection")
@with_settings(EvolveSettings)
def evolve(
    ctx: typer.Context,
    collection: Collection,
    adapter: Adapters,
    uri: Uri = "milvus.db",
    token: Token = None,
    target_token: TargetToken = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file of the settings below (keys as the flags, with _ for -); "
            "flags given override it.",
        ),
    ] = None,
    *,
    as_json: AsJson = False,
    **settings: Any,
) -> None:
    """Evolve stored old vectors through the adapter, verify, then cut over.

    Resumable (a ledger in the store records the cursor), idempotent (re-runs only
    write rows not yet evolved, so it is safe from cron) and verified before the alias
    moves. Exit codes: 0 done, 75 stopped by --max-seconds (run again), others = error.

    Example: dmu-migrate evolve --collection faces --adapter adapters/faces-v2 --uri faces.db

    Settings can come from a file: dmu-migrate evolve --collection faces
    --adapter adapters/faces-v2 --config evolve.toml --max-seconds 3000

    Into another store: dmu-migrate evolve --collection faces --adapter adapters/faces-v2
    --uri faces.db --target-uri qdrant://qdrant:6333
    """
    with user_errors():
        # Here, not at the top: the verbs load onnxruntime and the evolve path, which --help
        # and completion never need.
        from dmu_migrate.api.migrate import EvolvePreview
        from dmu_migrate.api.migrate import evolve as run_evolve
        from dmu_migrate.evolve.run import EXIT_REMAINING, Outcome

        with progress() as bar:
            phases = PhaseBars(bar)
            result = run_evolve(
                collection,
                adapter,
                uri=uri,
                token=token,
                target_token=target_token,
                config_file=config_file,
                on_progress=phases,
                **typed(ctx, settings),
            )
            if not isinstance(result, EvolvePreview):  # a run with no main pass shows it too
                phases.summary("evolve", result.rows_done, result.rows_total)
        if isinstance(result, EvolvePreview):
            show_preview(result, as_json)
            return
        evolve_numbers(result)
        show_result(result, as_json)
        if result.outcome == Outcome.REMAINING:
            raise typer.Exit(EXIT_REMAINING)


def show_preview(preview: EvolvePreview, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(preview.as_dict(), default=str))
        return
    est = preview.estimate
    for key, value in preview.plan.items():
        out.print(f"{key:>13}: {value}")
    out.print(
        f"     estimate: read + transform {est.read_transform_rows_per_s:,.0f} "
        f"rows/s on a {est.sample_rows}-row sample -> "
        f"{est.seconds_read_transform:,.1f}s plus write time. Nothing was changed."
    )


def show_result(result: EvolveResult, as_json: bool) -> None:
    # Here, not at the top: the verbs load onnxruntime and the evolve path, which --help
    # and completion never need.
    from dmu_migrate.evolve.run import Outcome

    if as_json:
        out.print_json(json.dumps(result.as_dict(), default=str))
        return
    in_all = f"{result.rows_done}/{result.rows_total} in all"
    if result.rows_written:
        out.print(
            f"{result.migration}: wrote {result.rows_written} rows in the main pass this run "
            f"({rates(result)}), {in_all}" + (" (resumed)" if result.resumed else "")
        )
    elif result.caught_up or result.updated or result.deleted:
        # A re-run: its changes are the in-step line below, not a main pass of 0 rows.
        out.print(
            f"{result.migration}: main pass done by an earlier run; this run brought the "
            f"target in step with the source, {in_all}"
        )
    else:
        out.print(f"{result.migration}: up to date, no row left to evolve")
    if result.outcome == Outcome.REMAINING:
        out.print("stopped at --max-seconds; run the same command again to continue")
    elif result.outcome == Outcome.DONE:  # a finished shard's notes say who cuts over
        show_finish(result)
    if result.retries:
        out.print(f"retried {result.retries} times after passing store failures")
    for note in result.notes:
        out.print(f"note: {note}")


def show_finish(result: EvolveResult) -> None:
    v = result.verify
    if result.caught_up or result.updated or result.deleted:
        out.print(
            f"in step with the source: {result.caught_up} rows added, "
            f"{result.updated} evolved again (source vector changed), "
            f"{result.deleted} deleted (gone from the source)"
        )
    if result.native:
        out.print(f"{result.native} rows written by the application left as they are")
    if v is not None:
        out.print(
            f"verified: {v.target_rows} rows, every source id present, "
            f"{v.sampled} sampled vectors within {v.max_abs_error:.1e}; searching the "
            f"target with them: {v.search}"
        )
    out.print(result.cut_over)


def rates(result: EvolveResult) -> str:
    """The write rate (rows over the main pass) and, beside it, rows over the whole run.

    One figure over the whole run hides the write rate behind the fixed steps (loading,
    the id check, verification, the cut-over), which do not grow with the rows written.
    """
    rows, seconds = result.rows_written, result.seconds
    main = result.phases.get("main_pass")
    whole = f"{rows / seconds:,.0f} rows/s end to end" if seconds else ""
    if not main:
        return whole or "0 rows/s"
    return f"{rows / main:,.0f} rows/s writing, {whole}" if whole else f"{rows / main:,.0f} rows/s"
