"""Commands on recorded migrations: verify, status, history, rollback, prune."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from dmu_migrate.cli.common import AsJson, PhaseBars, choices, out, progress, user_errors
from dmu_migrate.cli.migration import Adapters, Collection, TargetToken, Token, Uri
from dmu_migrate.cli.run_metrics import reported, verify_result
from dmu_migrate.cli.views import history_view, status_view
from dmu_migrate.errors import InputError
from dmu_migrate.evolve import NEW_COLLECTION, STRATEGIES
from dmu_migrate.stores.base import redact


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
    target_uri: Annotated[
        str | None, typer.Option(help="The store evolve --target-uri wrote into.")
    ] = None,
    target_token: TargetToken = None,
    as_json: AsJson = False,
) -> None:
    """Re-check a migration: every source id present, and sampled vectors equal adapter(old).

    Example: dmu-migrate verify --collection faces__v1 --alias faces --adapter adapters/faces-v2
    """
    with user_errors():
        # Here, not at the top: the verbs load onnxruntime and the evolve path, which --help
        # and completion never need.
        from dmu_migrate.api.migrate import verify as run_verify

        with progress() as bar:
            report = run_verify(
                collection,
                adapter,
                uri=uri,
                token=token,
                vector_field=vector_field,
                strategy=strategy,
                target_field=target_field,
                alias=alias,
                on_progress=PhaseBars(bar),
                target_uri=target_uri,
                target_token=target_token,
            )
        verify_result(report, report.target)
        if as_json:
            out.print_json(json.dumps(report.as_dict()))
            return
        out.print(
            f"{report.migration}: OK, {report.source_rows} source rows all present in "
            f"'{report.target}' and no evolved row without its source, {report.sampled} sampled "
            f"vectors within {report.max_abs_error:.1e} of the adapter's output of the current "
            f"source; searching '{report.target}' with them: {report.search}"
        )


def status(
    uri: Uri = "milvus.db",
    token: Token = None,
    collection: Annotated[
        str | None, typer.Option(help="Only migrations of this collection or alias.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Show migrations recorded in the store: progress, status, versions, the aliases
    each moved and where they point.

    Example: dmu-migrate status --uri faces.db
    """
    with user_errors():
        # Here, not at the top: the verbs load onnxruntime and the evolve path, which --help
        # and completion never need.
        from dmu_migrate.api.records import status as run_status

        rows = run_status(uri=uri, token=token, collection=collection).migrations
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
        # Here, not at the top: the verbs load onnxruntime and the evolve path, which --help
        # and completion never need.
        from dmu_migrate.api.records import history as run_history

        rows = run_history(uri=uri, token=token, collection=collection).migrations
        if as_json:
            out.print_json(json.dumps(rows, default=str))
            return
        out.print(history_view(rows))


def rollback(
    collection: Annotated[
        str,
        typer.Option(
            help="The alias to move back, or a collection whose migrations moved one alias."
        ),
    ],
    uri: Uri = "milvus.db",
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Undo the cut-over of the alias named: it goes back to the collection it named
    before (other aliases stay where they are), or an in-place snapshot is restored.

    Example: dmu-migrate rollback --collection faces --uri faces.db
    """
    with user_errors():
        # Here, not at the top: the verbs load onnxruntime and the evolve path, which --help
        # and completion never need.
        from dmu_migrate.api.records import rollback as run_rollback

        result = run_rollback(collection, uri=uri, token=token)
        if as_json:
            out.print_json(json.dumps(result.as_dict()))
            return
        out.print(f"{result.migration}: {result.message}")


def prune(
    collection: Annotated[str, typer.Option(help="The OLD collection to drop.")],
    uri: Uri = "milvus.db",
    token: Token = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: AsJson = False,
) -> None:
    """Drop old vectors that a finished, verified migration replaced. Asks first.

    Answering no drops nothing and exits 0. --json never asks: it needs --yes.

    Example: dmu-migrate prune --collection faces__v1 --uri faces.db --yes
    """
    with user_errors():
        # Here, not at the top: the verbs load onnxruntime and the evolve path, which --help
        # and completion never need.
        from dmu_migrate.api.records import prune as run_prune

        result = run_prune(
            collection,
            uri=uri,
            token=token,
            yes=yes,
            # A script reading --json cannot answer a prompt (and the prompt would land in its
            # JSON): without a confirm the library refuses, naming what would go and --yes.
            confirm=None if as_json else _confirm,
        )
        if as_json:
            out.print_json(json.dumps(result.as_dict()))
            return
        out.print(result.message)


def _confirm(what: str) -> bool:
    """Ask at the prompt; no answer at all (stdin closed, as under cron) drops nothing."""
    try:
        return typer.confirm(f"{what}. This cannot be undone. Continue?")
    except typer.Abort:
        raise InputError(
            f"prune would {what} and got no answer to its confirmation; nothing was dropped; "
            "pass --yes to prune without asking"
        ) from None
