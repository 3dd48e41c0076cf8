"""Commands that move stored vectors: evolve, verify, status, history, rollback, prune."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dmu_migrate.api.sharding import ENGINES
from dmu_migrate.cli.common import (
    AsJson,
    RowsBar,
    choices,
    out,
    progress,
    user_errors,
)
from dmu_migrate.cli.run_metrics import evolve_numbers, reported
from dmu_migrate.evolve import NEW_COLLECTION, STRATEGIES

if TYPE_CHECKING:
    from dmu_migrate.evolve.pipeline import EvolveResult

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
Collection = Annotated[str, typer.Option(help="Collection or alias holding the old vectors.")]
Adapters = Annotated[
    list[Path],
    typer.Option(
        "--adapter",
        help="Artifact directory written by train; repeat to chain upgrades (oldest first).",
    ),
]


@reported("evolve", ("done", "remaining", "shard done"), "collection")
def evolve(
    collection: Collection,
    adapter: Adapters,
    uri: Uri = "milvus.db",
    token: Token = None,
    strategy: Annotated[
        str,
        typer.Option(
            help="new-collection (copy + alias), new-field (vector beside the old one) or "
            "in-place (overwrite after a snapshot).",
            metavar=choices(STRATEGIES),
        ),
    ] = NEW_COLLECTION,
    alias: Annotated[
        str | None,
        typer.Option(
            help="Alias to point at the evolved collection (default: --collection when it "
            "is an alias)."
        ),
    ] = None,
    vector_field: Annotated[str | None, typer.Option(help="Vector field to evolve.")] = None,
    target_field: Annotated[
        str | None,
        typer.Option(help="new-field: name of the new vector field (default: <field>_<version>)."),
    ] = None,
    filter: Annotated[
        str | None,
        typer.Option(
            help="Evolve only matching rows (Milvus expression or Qdrant filter JSON); the alias "
            "is not moved."
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            help="Rows per read/write batch, 1-16384 (Milvus's query window); fewer when rows "
            "are wide (at most 8 MiB)."
        ),
    ] = 8192,
    threads: Annotated[int, typer.Option(help="onnxruntime threads, 0-256 (0 = all cores).")] = 0,
    read_ahead: Annotated[
        int,
        typer.Option(
            help="Batches read and transformed ahead of the writer, 0-64 (memory: a few "
            "batches per unit); 0 reads, transforms and writes in turn."
        ),
    ] = 1,
    full_verify: Annotated[
        bool,
        typer.Option(
            help="Compare every id of source and target before cut-over, even after a whole "
            "pass in one run whose counts add up."
        ),
    ] = False,
    max_seconds: Annotated[
        float | None,
        typer.Option(
            help="Stop after this many seconds (>= 0); exit code 75 means run again to continue."
        ),
    ] = None,
    take_over: Annotated[
        bool, typer.Option(help="Take the lease of a run that died without releasing it.")
    ] = False,
    restart: Annotated[
        bool,
        typer.Option(help="Forget this migration's ledger record and start from the first row."),
    ] = False,
    reapply: Annotated[
        bool,
        typer.Option(
            help="Cut a rolled-back migration over again (after bringing it in step); without "
            "it, runs after a rollback change nothing and exit 0."
        ),
    ] = False,
    write_path: Annotated[
        str,
        typer.Option(
            help="insert (upsert batches), bulk (Milvus server import jobs from files on "
            "--bulk-storage) or auto (bulk when --bulk-storage is given and the source is large).",
            metavar="insert|bulk|auto",
        ),
    ] = "insert",
    bulk_storage: Annotated[
        str | None,
        typer.Option(
            help="Directory the Milvus server reads (absolute path on its shared file system) "
            "where bulk import files are written and deleted after import.",
        ),
    ] = None,
    yes_overwrite: Annotated[bool, typer.Option(help="Confirm --strategy in-place.")] = False,
    accept_regression: Annotated[
        bool,
        typer.Option(
            help="Move the alias even if the adapter's validated new->evolved is below old->old."
        ),
    ] = False,
    across_metric: Annotated[
        bool,
        typer.Option(help="Evolve an IP/L2 collection of non-unit vectors into unit vectors."),
    ] = False,
    max_retries: Annotated[
        int,
        typer.Option(
            help="Retries of a step after a passing store failure (connection lost, timeout, "
            "rate limit), with exponential backoff; 0-100."
        ),
    ] = 5,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds to keep retrying one step before giving up (resumably); 1-86400."
        ),
    ] = 300.0,
    skip_bad_vectors: Annotated[
        bool,
        typer.Option(
            help="Leave rows with NaN, inf or all-zero vectors out (recorded in the ledger and "
            "reported) instead of stopping at the first one."
        ),
    ] = False,
    snapshot_dir: Annotated[
        Path, typer.Option(help="Where in-place keeps its Parquet snapshot.")
    ] = Path("dmu-snapshots"),
    dry_run: Annotated[
        bool, typer.Option(help="Print the plan and a timed estimate; change nothing.")
    ] = False,
    shards: Annotated[
        int | None,
        typer.Option(
            help="Split the ids into N >= 1 ranges that run, fail and resume independently; the "
            "alias moves when all are done and verified.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Local worker processes running --shards in parallel; 1-256.")
    ] = 1,
    shard: Annotated[
        str | None,
        typer.Option(
            help="Run only shard INDEX/COUNT (from 0, e.g. $JOB_COMPLETION_INDEX/8); the last "
            "shard to finish verifies and cuts over.",
            show_default=False,
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="Where --shards run: local (processes here) or ray.", metavar=choices(ENGINES)
        ),
    ] = ENGINES[0],
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to run on (ray://host:10001, auto); default: a local Ray.",
            show_default=False,
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Evolve stored old vectors through the adapter, verify, then cut over.

    Resumable (a ledger in the store records the cursor), idempotent (re-runs only
    write rows not yet evolved, so it is safe from cron) and verified before the alias
    moves. Exit codes: 0 done, 75 stopped by --max-seconds (run again), others = error.

    Example: dmu-migrate evolve --collection faces --adapter adapters/faces-v2 --uri faces.db
    """
    with user_errors():
        from dmu_migrate.api.migrate import EvolvePreview
        from dmu_migrate.api.migrate import evolve as run_evolve
        from dmu_migrate.evolve.pipeline import EXIT_REMAINING, REMAINING
        from dmu_migrate.evolve.shards import SHARD_DONE

        with progress() as bar:
            rows = RowsBar(bar, "evolve")
            result = run_evolve(
                collection,
                adapter,
                uri=uri,
                token=token,
                strategy=strategy,
                alias=alias,
                vector_field=vector_field,
                target_field=target_field,
                filter=filter,
                batch_size=batch_size,
                threads=threads,
                read_ahead=read_ahead,
                full_verify=full_verify,
                max_seconds=max_seconds,
                take_over=take_over,
                restart=restart,
                reapply=reapply,
                yes_overwrite=yes_overwrite,
                accept_regression=accept_regression,
                across_metric=across_metric,
                max_retries=max_retries,
                timeout=timeout,
                skip_bad_vectors=skip_bad_vectors,
                snapshot_dir=snapshot_dir,
                dry_run=dry_run,
                shards=shards,
                workers=workers,
                shard=shard,
                engine=engine,
                ray_address=ray_address,
                write_path=write_path,
                bulk_storage=bulk_storage,
                on_progress=rows,
            )
            if not isinstance(result, EvolvePreview):
                rows.finish(result.rows_done, result.rows_total)  # resumed or no-op runs too
        if not isinstance(result, EvolvePreview):
            evolve_numbers(result)
        if isinstance(result, EvolvePreview):
            if as_json:
                out.print_json(json.dumps(result.as_dict(), default=str))
                return
            est = result.estimate
            for key, value in result.plan.items():
                out.print(f"{key:>13}: {value}")
            out.print(
                f"     estimate: read + transform {est.read_transform_rows_per_s:,.0f} "
                f"rows/s on a {est.sample_rows}-row sample -> "
                f"{est.seconds_read_transform:,.1f}s plus write time. Nothing was changed."
            )
            return
        if as_json:
            out.print_json(json.dumps(result.as_dict(), default=str))
        else:
            if not (result.rows_written or result.caught_up or result.updated or result.deleted):
                out.print(f"{result.migration}: up to date, no row left to evolve")
            else:
                out.print(
                    f"{result.migration}: wrote {result.rows_written} rows this run "
                    f"({rates(result)}), {result.rows_done}/{result.rows_total} in all"
                    + (" (resumed)" if result.resumed else "")
                )
            if result.outcome == REMAINING:
                out.print("stopped at --max-seconds; run the same command again to continue")
            elif result.outcome == SHARD_DONE:
                pass  # the notes say how many shards are done and who cuts over
            else:
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
                        f"{v.sampled} sampled vectors within {v.max_abs_error:.1e}, "
                        f"{v.searched} found by searching the target"
                    )
                out.print(result.cut_over)
            if result.retries:
                out.print(f"retried {result.retries} times after passing store failures")
            for note in result.notes:
                out.print(f"note: {note}")
        if result.outcome == REMAINING:
            raise typer.Exit(EXIT_REMAINING)


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
