"""Commands that move stored vectors: evolve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dmu_migrate.artifact import load_artifact
from dmu_migrate.cli.common import AsJson, out, progress, user_errors


def evolve(
    collection: Annotated[str, typer.Option(help="Collection or alias holding the old vectors.")],
    adapter: Annotated[Path, typer.Option(help="Artifact directory written by train.")],
    uri: Annotated[
        str, typer.Option(help="Milvus Lite file (./x.db) or server URL.")
    ] = "milvus.db",
    token: Annotated[
        str | None,
        typer.Option(
            help="Milvus token (user:password or API key).",
            envvar="DMU_MILVUS_TOKEN",
            show_default=False,
        ),
    ] = None,
    alias: Annotated[
        str | None,
        typer.Option(
            help="Alias to point at the evolved collection (default: --collection when it "
            "is an alias)."
        ),
    ] = None,
    vector_field: Annotated[str | None, typer.Option(help="Vector field to evolve.")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per read/write batch.")] = 4096,
    threads: Annotated[int, typer.Option(help="onnxruntime threads (0 = all cores).")] = 0,
    as_json: AsJson = False,
) -> None:
    """Stream stored old vectors through the adapter into a new collection, verify, re-point.

    Example: dmu-migrate evolve --collection faces --adapter adapters/faces-v2 --uri faces.db
    """
    with user_errors():
        from dmu_migrate.evolve.pipeline import evolve as run_evolve
        from dmu_migrate.stores.base import open_store

        artifact = load_artifact(adapter)
        store = open_store(uri, token)
        try:
            with progress() as bar:
                task = bar.add_task("evolve", total=None, info="")

                def on_progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total, info="rows")

                result = run_evolve(
                    store,
                    collection,
                    artifact,
                    alias,
                    vector_field,
                    batch_size,
                    threads,
                    on_progress,
                )
        finally:
            store.close()
        if as_json:
            out.print_json(json.dumps(result.as_dict()))
            return
        rate = result.rows / result.seconds if result.seconds else 0.0
        out.print(
            f"evolved {result.rows} rows '{result.source}' -> '{result.target}' "
            f"({rate:,.0f} rows/s); verified (max error {result.max_abs_error:.1e}); "
            f"alias '{result.alias}' -> '{result.target}'. "
            f"Old collection '{result.source}' is unchanged."
        )
