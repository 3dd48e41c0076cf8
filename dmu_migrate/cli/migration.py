"""Commands that move stored vectors: evolve, verify, status, history, rollback, prune."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.table import Table

from dmu_migrate.artifact import load_artifact
from dmu_migrate.cli.common import AsJson, out, progress, quiet_client_logs, user_errors
from dmu_migrate.errors import InputError, StoreError

if TYPE_CHECKING:
    from dmu_migrate.evolve.plan import Plan
    from dmu_migrate.stores.base import VectorStore

Uri = Annotated[
    str,
    typer.Option(
        help="Milvus Lite file (x.db), Milvus server (http://host:19530), "
        "Qdrant (qdrant://host:6333, qdrant:local/dir) or parquet:dir."
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        help="Store credentials (Milvus user:password or token, Qdrant API key).",
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
    from dmu_migrate.stores.base import open_store

    store = open_store(uri, token)
    quiet_client_logs()
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


def evolve(
    collection: Collection,
    adapter: Adapters,
    uri: Uri = "milvus.db",
    token: Token = None,
    strategy: Annotated[
        str,
        typer.Option(
            help="new-collection (copy + alias), new-field (vector beside the old one) or "
            "in-place (overwrite after a snapshot)."
        ),
    ] = "new-collection",
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
        typer.Option(help="Rows per read/write batch (fewer when rows are wide: at most 8 MiB)."),
    ] = 8192,
    threads: Annotated[int, typer.Option(help="onnxruntime threads (0 = all cores).")] = 0,
    read_ahead: Annotated[
        int,
        typer.Option(
            help="Batches read and transformed ahead of the writer (memory: a few batches "
            "per unit); 0 reads, transforms and writes in turn."
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
        typer.Option(help="Stop after this long; exit code 75 means run again to continue."),
    ] = None,
    take_over: Annotated[
        bool, typer.Option(help="Take the lease of a run that died without releasing it.")
    ] = False,
    restart: Annotated[
        bool,
        typer.Option(help="Forget this migration's ledger record and start from the first row."),
    ] = False,
    yes_overwrite: Annotated[bool, typer.Option(help="Confirm --strategy in-place.")] = False,
    accept_regression: Annotated[
        bool,
        typer.Option(
            help="Move the alias even if the adapter's validated new->evolved is below old->old."
        ),
    ] = False,
    max_retries: Annotated[
        int,
        typer.Option(
            help="Retries of a step after a passing store failure (connection lost, timeout, "
            "rate limit), with exponential backoff."
        ),
    ] = 5,
    timeout: Annotated[
        float, typer.Option(help="Seconds to keep retrying one step before giving up (resumably).")
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
            help="Split the ids into N ranges that run, fail and resume independently; the "
            "alias moves when all are done and verified.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Local worker processes running --shards in parallel.")
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
        str, typer.Option(help="Where --shards run: local (processes here) or ray.")
    ] = "local",
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

        if batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {batch_size}")
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
            )
            with progress() as bar:
                task = bar.add_task("evolve", total=plan.rows, info="rows")

                def moved(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                if fanout.sharded:
                    job = fanout.job(uri, token, collection, adapter, threads, plan_args, options)
                    result = run_fanout(store, plan, fanout, job, moved)
                else:
                    result = run_evolve(store, plan, options, moved)
                bar.update(task, completed=result.rows_done)  # resumed or no-op runs too
        if as_json:
            out.print_json(json.dumps(result.as_dict(), default=str))
        else:
            rate = result.rows_written / result.seconds if result.seconds else 0.0
            if result.rows_written == 0 and result.caught_up == 0:
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
                if result.caught_up:
                    out.print(f"caught up {result.caught_up} rows missing from the target")
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


def verify(
    collection: Collection,
    adapter: Adapters,
    uri: Uri = "milvus.db",
    token: Token = None,
    vector_field: Annotated[str | None, typer.Option(help="Vector field that was evolved.")] = None,
    strategy: Annotated[str, typer.Option(help="Strategy the migration used.")] = "new-collection",
    target_field: Annotated[str | None, typer.Option(help="new-field: the evolved field.")] = None,
    alias: Annotated[str | None, typer.Option(help="Alias of the migration, if any.")] = None,
    as_json: AsJson = False,
) -> None:
    """Re-check a migration: every source id present, and sampled vectors equal adapter(old).

    Example: dmu-migrate verify --collection faces__v1 --alias faces --adapter adapters/faces-v2
    """
    with user_errors():
        from dmu_migrate.evolve.strategies import make_strategy
        from dmu_migrate.evolve.verify import Reservoir
        from dmu_migrate.evolve.verify import verify as run_verify

        with opened(uri, token) as store:
            plan = build_plan(
                store,
                collection,
                adapter,
                0,
                strategy=strategy,
                alias=alias,
                vector_field=vector_field,
                target_field=target_field,
                yes_overwrite=True,
                accept_regression=True,  # verify judges the data, not the upgrade
            )
            if not store.has_collection(plan.target):
                raise StoreError(
                    f"'{plan.target}' does not exist, so there is nothing to verify; run "
                    f"evolve first"
                )
            record = store.ledger_get(plan.key)
            snapshot_root = Path((record or {}).get("snapshot") or "dmu-snapshots").parent
            skipped = frozenset((record or {}).get("skipped") or [])
            sample = Reservoir(256)
            for _ in sample.tee(store.iter_ids(plan.source.name, 16384)):
                pass
            ids = np.asarray([i for i in sample.ids().tolist() if i not in skipped])
            writer = make_strategy(store, plan, snapshot_root)
            report = run_verify(store, plan, writer, ids, skipped)
        if as_json:
            out.print_json(json.dumps({"migration": plan.key, **report.as_dict()}))
            return
        out.print(
            f"{plan.key}: OK, {report.source_rows} source rows all present in "
            f"'{plan.target}', {report.sampled} sampled vectors within "
            f"{report.max_abs_error:.1e}"
        )


def status(
    uri: Uri = "milvus.db",
    token: Token = None,
    collection: Annotated[
        str | None, typer.Option(help="Only migrations of this collection or alias.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Show migrations recorded in the store: progress, status, versions, alias targets.

    Example: dmu-migrate status --uri faces.db
    """
    with user_errors():
        from dmu_migrate.evolve.admin import migration_status
        from dmu_migrate.stores.base import redact

        with opened(uri, token) as store:
            rows = migration_status(store, collection)
        if as_json:
            out.print_json(json.dumps(rows, default=str))
            return
        if not rows:
            out.print("no migrations recorded" + (f" for '{collection}'" if collection else ""))
            return
        table = Table(title=f"migrations in {redact(uri)}")
        for col in ("migration", "strategy", "status", "rows", "versions", "alias", "updated"):
            table.add_column(col, overflow="fold")  # names are what users copy: never elide
        for r in rows:
            shards = r.get("shard_status") or []
            done = sum(s["status"] == "done" for s in shards)
            table.add_row(
                r["key"],
                r["strategy"],
                r["status"] + (f" ({done}/{len(shards)} shards done)" if shards else ""),
                f"{r['rows_done']}/{r['source_rows']}",
                f"{r['from_version']} -> {r['to_version']}",
                f"{r['alias']} -> {r['alias_target']}" if r["alias"] else "-",
                r["updated_at"],
            )
        out.print(table)
        for r in rows:
            if r.get("quality"):
                out.print(f"{r['key']}: {r['quality']}", markup=False)


def history(
    uri: Uri = "milvus.db",
    token: Token = None,
    collection: Annotated[
        str | None, typer.Option(help="Only the lineage of this collection or alias.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List every recorded upgrade, oldest first (v1 -> v2 -> v3 ...).

    Example: dmu-migrate history --uri faces.db --collection faces
    """
    with user_errors():
        from dmu_migrate.evolve.admin import migration_status

        with opened(uri, token) as store:
            rows = migration_status(store, collection)
        if as_json:
            out.print_json(json.dumps(rows, default=str))
            return
        for r in rows:
            out.print(
                f"{r['started_at']}  {r['from_version']} -> {r['to_version']}  "
                f"{r['key']}  ({r['status']})  adapters: {', '.join(r['adapters'])}",
                markup=False,
            )
            if r.get("quality"):
                out.print(f"    {r['quality']}", markup=False)


def rollback(
    collection: Annotated[str, typer.Option(help="Alias or collection of the migration.")],
    uri: Uri = "milvus.db",
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Undo the last cut-over: alias back to the old collection, or restore the snapshot.

    Example: dmu-migrate rollback --collection faces --uri faces.db
    """
    with user_errors():
        from dmu_migrate.evolve.admin import rollback as run_rollback

        with opened(uri, token) as store:
            key, message = run_rollback(store, collection)
        if as_json:
            out.print_json(json.dumps({"migration": key, "result": message}))
            return
        out.print(f"{key}: {message}")


def prune(
    collection: Annotated[str, typer.Option(help="The OLD collection to drop.")],
    uri: Uri = "milvus.db",
    token: Token = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Drop old vectors that a finished, verified migration replaced. Asks first.

    Example: dmu-migrate prune --collection faces__v1 --uri faces.db --yes
    """
    with user_errors():
        from dmu_migrate.evolve.admin import prune as run_prune
        from dmu_migrate.evolve.admin import prune_plan

        with opened(uri, token) as store:
            record, what = prune_plan(store, collection)
            if not yes and not typer.confirm(f"{what}. This cannot be undone. Continue?"):
                raise typer.Exit(1)
            out.print(run_prune(store, record))
