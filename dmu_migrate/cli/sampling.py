"""sample: the stored old vectors of a collection as the old half of a training table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dmu_migrate.api.store import opened
from dmu_migrate.cli.common import AsJson, check_range, out, progress, user_errors
from dmu_migrate.cli.migration import Token, Uri
from dmu_migrate.evolve.settings import MAX_BATCH
from dmu_migrate.sample import sample_collection


def sample(
    collection: Annotated[str, typer.Option(help="Collection or alias holding the old vectors.")],
    output: Annotated[
        Path,
        typer.Option(
            help="Parquet table to write: columns id, old and (with --label-field) label."
        ),
    ],
    uri: Uri = "milvus.db",
    token: Token = None,
    limit: Annotated[
        int | None,
        typer.Option(help="Sample exactly this many rows (all when fewer); memory: twice as many."),
    ] = None,
    fraction: Annotated[
        float | None,
        typer.Option(help="Keep each row with this probability, 0 < F <= 1; memory: one batch."),
    ] = None,
    label_field: Annotated[
        str | None,
        typer.Option(help="Field (Milvus) or payload key (Qdrant) to write as the label column."),
    ] = None,
    filter: Annotated[
        str | None,
        typer.Option(help="Sample only matching rows (Milvus expression or Qdrant filter JSON)."),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Which sample, >= 0: the same seed picks the same ids.")
    ] = 0,
    vector_field: Annotated[
        str | None, typer.Option(help="Vector field of the old vectors.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows read per batch, 1-16384.")] = 8192,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --output.")] = False,
    as_json: AsJson = False,
) -> None:
    """Write a seeded uniform sample of the stored old vectors as a training table.

    One pass in id order. The table has id, old (the stored vector, as train reads
    it) and label; train also needs the new model's input x for every row (or, with
    --method adapter, the new embedding new): join yours on id before training.

    Example: dmu-migrate sample --collection faces --uri faces.db --label-field label --limit 1000 --output train_old.parquet
    """
    with user_errors():
        check_range("--batch-size", batch_size, 1, MAX_BATCH, "Milvus's query window")
        check_range("--seed", seed, 0, 2**63 - 1)
        with opened(uri, token) as store, progress() as bar:
            task = bar.add_task("sample", total=None, info="rows read")

            def read(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = sample_collection(
                store,
                collection,
                output,
                limit=limit,
                fraction=fraction,
                label_field=label_field,
                filter=filter,
                vector_field=vector_field,
                seed=seed,
                batch_size=batch_size,
                overwrite=overwrite,
                progress=read,
            )
        if as_json:
            out.print_json(json.dumps(result.as_dict()))
            return
        labels = f", {result.labels} distinct labels" if result.labels is not None else ""
        out.print(
            f"sampled {result.rows} of {result.rows_read} rows of '{result.collection}' "
            f"({result.dim}-d '{result.vector_field}'{labels}) into {result.output} "
            f"[{', '.join(result.columns)}] in {result.seconds:.1f}s",
            soft_wrap=True,
        )
        out.print("next: add the new model's input column x for these ids, then train")
