"""The partial-backfill verbs: plan_backfill ranks what to re-embed first, backfill writes it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from dmu_migrate.api.migrate import MAX_BATCH
from dmu_migrate.api.store import opened
from dmu_migrate.artifact import load_artifact
from dmu_migrate.errors import InputError, check_range
from dmu_migrate.evolve.backfill_input import EmbedCall, VectorTable
from dmu_migrate.evolve.backfill_plan import RankedIds, parse_budget
from dmu_migrate.evolve.backfill_plan import plan_backfill as run_plan
from dmu_migrate.evolve.backfill_tag import tag_target, tag_target_of
from dmu_migrate.evolve.backfill_write import BackfillResult
from dmu_migrate.evolve.backfill_write import backfill as run_backfill
from dmu_migrate.evolve.progress import quiet

if TYPE_CHECKING:
    from dmu_migrate.evolve.progress import Report


def plan_backfill(
    collection: str,
    adapter: str | Path,
    uri: str = "milvus.db",
    token: str | None = None,
    output: str | Path | None = None,
    budget: str | None = None,
    limit: int | None = None,
    vector_field: str | None = None,
    batch_size: int = 8192,
    tag: bool = False,
    on_progress: Report | None = None,
    overwrite: bool = False,
) -> RankedIds:
    """Rank the stored old vectors by the expected gain of re-embedding, highest first.

    Every old vector of the migration goes through the artifact's
    backfill_score.onnx; rows already re-embedded natively are left out.
    ``budget`` keeps the best share ("10%") or a row count ("5000"); ``output``
    writes the plan as Parquet (rank, id, score) for ``backfill(ids=...)``;
    ``tag`` writes each planned row's rank into field dmu_backfill_rank of the
    migration's evolved collection, clearing the ranks an earlier plan left there.
    An existing ``output`` is replaced only with ``overwrite``.
    ``on_progress(phase, done, total)`` hears "native ids" (the rows left out, read
    from the evolved collection) and "score", then with ``tag`` "untag" and "tag".
    """
    check_range("--batch-size", batch_size, 1, MAX_BATCH, "Milvus's query window")
    if limit is not None:
        check_range("--limit", limit, 1, 10**12)
    share = parse_budget(budget) if budget is not None else None
    if output is not None and Path(output).exists() and not overwrite:
        # Before the scan: a plan the backfill may still be reading is not replaced by surprise.
        raise InputError(
            f"--output '{output}' already exists (an earlier plan?); pass --overwrite to "
            f"replace it, or choose another --output"
        )
    artifact = load_artifact(Path(adapter))
    report = on_progress or quiet
    with opened(uri, token) as store:
        target = tag_target_of(store, collection) if tag else None  # before the long scan
        plan = run_plan(store, collection, artifact, share, limit, vector_field, batch_size, report)
        if output is not None:  # first: a store failure while tagging keeps the plan
            plan.write(Path(output))
        if target is not None:
            plan = replace(plan, tagged=tag_target(store, target, plan.ids, batch_size, report))
    return plan


def backfill(
    collection: str,
    uri: str = "milvus.db",
    token: str | None = None,
    input: str | Path | None = None,
    embed: str | None = None,
    ids: str | Path | None = None,
    id_column: str = "id",
    vector_column: str = "vector",
    batch_size: int = 1024,
    take_over: bool = False,
    on_progress: Report | None = None,
) -> BackfillResult:
    """Write natively re-embedded vectors into the migration's evolved collection, by id.

    From a Parquet table (``input``; with ``ids``, only the rows it lists) or
    from ``embed="pkg.module:function"`` called as function(ids, fields) on the
    rows of ``ids``. Rows get dmu_origin=native; evolve re-runs never touch
    them. The input is checked whole before the first write; each batch is read
    back before the ledger records it, so a killed run resumes where it stopped.
    ``on_progress(phase, done, total)`` hears "input check" (the whole input, before
    the first write), then "backfill" (rows written and read back).
    """
    check_range("--batch-size", batch_size, 1, MAX_BATCH, "Milvus's query window")
    if (input is None) == (embed is None):
        raise InputError("give either --input TABLE or --embed pkg.module:function, not both")
    ids_path = Path(ids) if ids is not None else None
    if input is not None:
        source: VectorTable | EmbedCall = VectorTable(
            Path(input), id_column, vector_column, ids_path
        )
    elif ids_path is None:
        raise InputError("--embed needs --ids TABLE (e.g. the plan-backfill --output file)")
    else:
        source = EmbedCall(str(embed), ids_path, id_column)
    with opened(uri, token) as store:
        return run_backfill(store, collection, source, batch_size, take_over, on_progress or quiet)
