"""Commands that move stored vectors: evolve, verify, status, history, rollback, prune."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dmu_migrate.artifact import load_artifact
from dmu_migrate.cli.common import (
    AsJson,
    check_range,
    choices,
    out,
    progress,
    user_errors,
)
from dmu_migrate.cli.logs import client_logs
from dmu_migrate.cli.run_metrics import evolve_numbers, reported
from dmu_migrate.cli.sharding import ENGINES
from dmu_migrate.evolve import NEW_COLLECTION, STRATEGIES

if TYPE_CHECKING:
    from dmu_migrate.evolve.plan import Plan
    from dmu_migrate.stores.base import VectorStore

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


@contextmanager
def opened(uri: str, token: str | None) -> Iterator[VectorStore]:
    from dmu_migrate.stores.base import open_store, store_token

    store = open_store(uri, store_token(uri, token))
    client_logs()
    try:
        yield store
    finally:
        store.close()


def build_plan(
    store: VectorStore, collection: str, adapters: list[Path], threads: int, **kwargs: Any
) -> Plan:
    from dmu_migrate.evolve.plan import make_plan
    from dmu_migrate.evolve.transform import AdapterChain

    chain = AdapterChain([load_artifact(a) for a in adapters], threads)
    return make_plan(store, collection, chain, **kwargs)


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
        from dmu_migrate.cli.sharding import Fanout, run_fanout
        from dmu_migrate.evolve.pipeline import EXIT_REMAINING, REMAINING, EvolveOptions
        from dmu_migrate.evolve.pipeline import evolve as run_evolve
        from dmu_migrate.evolve.plan import estimate
        from dmu_migrate.evolve.retry import RetryPolicy
        from dmu_migrate.evolve.shards import SHARD_DONE
        from dmu_migrate.stores.base import store_token

        check_flags(batch_size, threads, read_ahead, max_seconds, max_retries, timeout)
        check_range("--workers", workers, 1, 256)
        fanout = Fanout.from_flags(shards, workers, shard, engine, ray_address)
        threads = fanout.threads(threads)
        plan_args = {
            "strategy": strategy,
            "alias": alias,
            "vector_field": vector_field,
            "target_field": target_field,
            "filter": filter,
            "yes_overwrite": yes_overwrite,
            "accept_regression": accept_regression,
            "across_metric": across_metric,
        }
        with opened(uri, token) as store:
            plan = build_plan(store, collection, adapter, threads, **plan_args)
            if dry_run:
                est = estimate(store, plan, batch_size)
                report = {**plan.describe(), "estimate": est.__dict__, "dry_run": True}
                if as_json:
                    out.print_json(json.dumps(report, default=str))
                    return
                for key, value in plan.describe().items():
                    out.print(f"{key:>13}: {value}")
                out.print(
                    f"     estimate: read + transform {est.read_transform_rows_per_s:,.0f} "
                    f"rows/s on a {est.sample_rows}-row sample -> "
                    f"{est.seconds_read_transform:,.1f}s plus write time. Nothing was changed."
                )
                return
            options = EvolveOptions(
                batch_size,
                max_seconds,
                take_over,
                restart,
                snapshot_dir,
                skip_bad_vectors,
                RetryPolicy(max_retries, timeout),
                read_ahead,
                full_verify,
                reapply,
            )
            with progress() as bar:
                task = bar.add_task("evolve", total=plan.rows, info="rows")

                def moved(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                if fanout.sharded:
                    # Ray workers on other machines lack this one's environment: pass the token.
                    token = store_token(uri, token)
                    job = fanout.job(uri, token, collection, adapter, threads, plan_args, options)
                    result = run_fanout(store, plan, fanout, job, moved)
                else:
                    result = run_evolve(store, plan, options, moved)
                bar.update(task, completed=result.rows_done)  # resumed or no-op runs too
        evolve_numbers(result)
        if as_json:
            out.print_json(json.dumps(result.as_dict(), default=str))
        else:
            rate = result.rows_written / result.seconds if result.seconds else 0.0
            if not (result.rows_written or result.caught_up or result.updated or result.deleted):
                out.print(f"{result.migration}: up to date, no row left to evolve")
            else:
                out.print(
                    f"{result.migration}: wrote {result.rows_written} rows this run "
                    f"({rate:,.0f} rows/s), {result.rows_done}/{result.rows_total} in all"
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


# Milvus answers at most 16,384 rows per query page (its query window); every store
# reads in pages of --batch-size rows, so it cannot be larger.
MAX_BATCH = 16384


def check_flags(
    batch_size: int,
    threads: int,
    read_ahead: int,
    max_seconds: float | None,
    max_retries: int,
    timeout: float,
) -> None:
    """Every number evolve takes, checked before anything opens: one line, never a traceback."""
    check_range("--batch-size", batch_size, 1, MAX_BATCH, "Milvus's query window")
    check_range("--threads", threads, 0, 256, "0 uses every core")
    check_range("--read-ahead", read_ahead, 0, 64)
    if max_seconds is not None:
        check_range("--max-seconds", max_seconds, 0, 10**9)
    check_range("--max-retries", max_retries, 0, 100)
    check_range("--timeout", timeout, 1, 86400)
