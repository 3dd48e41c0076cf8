"""Partial backfill: plan-backfill ranks what to re-embed first, backfill writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dmu_migrate.cli.common import AsJson, PhaseBars, out, progress, user_errors
from dmu_migrate.cli.migration import Token, Uri
from dmu_migrate.cli.run_metrics import backfill_numbers, reported

SHOWN = 10  # rows of the plan printed without --json


def plan_backfill(
    collection: Annotated[
        str, typer.Option(help="Alias, evolved collection or old collection of the migration.")
    ],
    adapter: Annotated[
        Path, typer.Option(help="Artifact directory written by train (its backfill_score.onnx).")
    ],
    uri: Uri = "milvus.db",
    token: Token = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Write the plan as Parquet: rank, id, score (highest score first)."),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(help="Keep the best share of the collection (10%) or a row count (5000)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Keep at most this many ids (with --budget: the smaller).")
    ] = None,
    vector_field: Annotated[
        str | None, typer.Option(help="Vector field of the old vectors.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows read per batch, 1-16384.")] = 8192,
    tag: Annotated[
        bool,
        typer.Option(
            help="Also write each planned row's rank (1 = re-embed first) into field "
            "dmu_backfill_rank of the evolved collection; ranks an earlier plan left on rows "
            "not in this one are cleared."
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --output.")] = False,
    as_json: AsJson = False,
) -> None:
    """Rank the stored old vectors by expected gain of re-embedding, highest first.

    Streams every old vector of the migration through the artifact's backfill_score.onnx;
    rows already re-embedded natively are left out. With --tag the ranks also go onto the
    evolved rows, for the application to select (dmu_backfill_rank <= 1000).

    Example: dmu-migrate plan-backfill --collection faces --adapter adapters/faces-v2 --uri faces.db --budget 10% --output plan.parquet
    """
    with user_errors():
        # Here, not at the top: the verbs load onnxruntime and the evolve path, which --help
        # and completion never need.
        from dmu_migrate.api.backfill import plan_backfill as run_plan

        with progress() as bar:
            plan = run_plan(
                collection,
                adapter,
                uri=uri,
                token=token,
                output=output,
                budget=budget,
                limit=limit,
                vector_field=vector_field,
                batch_size=batch_size,
                tag=tag,
                on_progress=PhaseBars(bar),
                overwrite=overwrite,
            )
        if as_json:
            out.print_json(json.dumps(plan.as_dict(), default=str))
            return
        table = Table(title=f"re-embed first ({plan.collection}, {plan.artifact})")
        for col in ("rank", "id", "score"):
            table.add_column(col, justify="right")
        for k, (i, s) in enumerate(zip(plan.ids.tolist()[:SHOWN], plan.scores, strict=False)):
            table.add_row(str(k + 1), str(i), f"{s:.4f}")
        out.print(table)
        out.print(
            f"{len(plan.ids)} of {plan.rows_scored} scored rows planned"
            + (f", {plan.native_left_out} already native left out" if plan.native_left_out else "")
            + (f"; written to {output}" if output is not None else ""),
            soft_wrap=True,
        )
        if plan.tagged is not None:
            t = plan.tagged
            out.print(
                f"ranks written to {t.tagged} rows of '{t.target}' as dmu_backfill_rank"
                + (f"; {t.cleared} ranks of an earlier plan cleared" if t.cleared else "")
                + (
                    f"; {t.not_in_target} planned ids are not rows of it yet (run evolve, "
                    f"then plan-backfill --tag again)"
                    if t.not_in_target
                    else ""
                ),
                soft_wrap=True,
            )


@reported("backfill", ("done",), "collection")
def backfill(
    collection: Annotated[
        str, typer.Option(help="Alias, evolved collection or old collection of the migration.")
    ],
    uri: Uri = "milvus.db",
    token: Token = None,
    input: Annotated[
        Path | None,
        typer.Option(help="Parquet table of native vectors: --id-column and --vector-column."),
    ] = None,
    embed: Annotated[
        str | None,
        typer.Option(
            help="pkg.module:function called as function(ids, fields) -> (n, d) array on the "
            "stored rows of the ids in --ids.",
            show_default=False,
        ),
    ] = None,
    ids: Annotated[
        Path | None,
        typer.Option(
            help="Parquet table of the ids to write (e.g. plan-backfill --output): the rows "
            "--embed embeds, or the rows of --input to write."
        ),
    ] = None,
    id_column: Annotated[str, typer.Option(help="Column with the row ids.")] = "id",
    vector_column: Annotated[str, typer.Option(help="Column with the native vectors.")] = "vector",
    batch_size: Annotated[int, typer.Option(help="Rows written per batch, 1-16384.")] = 1024,
    take_over: Annotated[
        bool, typer.Option(help="Take the lease of a run that died without releasing it.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Write natively re-embedded vectors into the evolved collection, by id.

    Rows get dmu_origin=native and the new version tag; evolve re-runs never touch
    them. The input is checked whole before the first write; each batch is read back
    before the ledger records it, so a killed run resumes where it stopped.

    Example: dmu-migrate backfill --collection faces --uri faces.db --input native.parquet
    """
    with user_errors():
        # Here, not at the top: the verbs load onnxruntime and the evolve path, which --help
        # and completion never need.
        from dmu_migrate.api.backfill import backfill as run_backfill

        with progress() as bar:
            result = run_backfill(
                collection,
                uri=uri,
                token=token,
                input=input,
                embed=embed,
                ids=ids,
                id_column=id_column,
                vector_column=vector_column,
                batch_size=batch_size,
                take_over=take_over,
                on_progress=PhaseBars(bar),
            )
        backfill_numbers(result)
        if as_json:
            out.print_json(json.dumps(result.as_dict(), default=str))
        elif result.up_to_date:
            out.print(f"{result.migration}: {result.input} was already written; nothing to do")
        else:
            out.print(
                f"{result.migration}: wrote {result.rows_written} native rows into "
                f"'{result.target}' from {result.input}, {result.rows_done}/{result.rows_total} "
                + ("in all (resumed)" if result.resumed else "in all")
                + "; read back and verified",
                soft_wrap=True,
            )
