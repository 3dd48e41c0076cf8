"""Commands on recorded migrations: verify, status, history, rollback, prune."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from dmu_migrate.cli.common import AsJson, choices, out, user_errors
from dmu_migrate.cli.migration import Adapters, Collection, Token, Uri, build_plan, opened
from dmu_migrate.cli.run_metrics import reported, verify_result
from dmu_migrate.cli.views import history_view, status_view
from dmu_migrate.errors import StoreError
from dmu_migrate.evolve import NEW_COLLECTION, STRATEGIES


@reported("verify", ("done",), "collection")
def verify(
    collection: Collection,
    adapter: Adapters,
    uri: Uri = "milvus.db",
    token: Token = None,
    vector_field: Annotated[str | None, typer.Option(help="Vector field that was evolved.")] = None,
    strategy: Annotated[
        str, typer.Option(help="Strategy the migration used.", metavar=choices(STRATEGIES))
    ] = NEW_COLLECTION,
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
                across_metric=True,
            )
            if not store.has_collection(plan.target):
                raise StoreError(
                    f"'{plan.target}' does not exist, so there is nothing to verify; run "
                    f"evolve first"
                )
            from dmu_migrate.evolve.ledger import Ledger

            record = Ledger(store).load(plan.key)
            snapshot_root = Path((record and record.snapshot) or "dmu-snapshots").parent
            skipped = frozenset(record.skipped if record else [])
            sample = Reservoir(256)
            for _ in sample.tee(store.iter_ids(plan.source.name, 16384)):
                pass
            ids = np.asarray([i for i in sample.ids().tolist() if i not in skipped])
            writer = make_strategy(store, plan, snapshot_root)
            report = run_verify(store, plan, writer, ids, skipped)
        verify_result(report, plan.target)
        if as_json:
            out.print_json(json.dumps({"migration": plan.key, **report.as_dict()}))
            return
        out.print(
            f"{plan.key}: OK, {report.source_rows} source rows all present in "
            f"'{plan.target}' and no evolved row without its source, {report.sampled} sampled "
            f"vectors within {report.max_abs_error:.1e} of the adapter's output of the current "
            f"source"
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
        out.print(status_view(out, rows, f"migrations in {redact(uri)}"))


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
        out.print(history_view(rows))


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
                # The operator's answer, not a failure: scripts that say no must not break.
                out.print(f"not pruned: nothing was dropped from '{collection}'")
                return
            out.print(run_prune(store, record))
