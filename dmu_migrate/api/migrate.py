"""The verbs that move stored vectors: evolve and verify (no torch on this path)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmu_migrate.api.sharding import ENGINES
from dmu_migrate.api.store import opened, resolve_token
from dmu_migrate.errors import InputError, StoreError, check_range
from dmu_migrate.evolve import NEW_COLLECTION
from dmu_migrate.evolve.bulk_pass import INSERT, WRITE_PATHS
from dmu_migrate.evolve.pipeline import EvolveOptions, EvolveResult
from dmu_migrate.evolve.plan import Estimate
from dmu_migrate.evolve.progress import ProgressCallback
from dmu_migrate.evolve.retry import RetryPolicy
from dmu_migrate.evolve.verify import VerifyReport

if TYPE_CHECKING:
    from dmu_migrate.evolve.plan import Plan
    from dmu_migrate.stores.base import VectorStore

# One artifact directory, or several to chain upgrades (oldest first).
AdapterPaths = str | Path | Sequence[str | Path]

# Milvus answers at most 16,384 rows per query page (its query window); every store
# reads in pages of batch_size rows, so it cannot be larger.
MAX_BATCH = 16384

# The defaults of evolve's numbers live in EvolveOptions and RetryPolicy; the verb reuses them.
_OPTIONS = EvolveOptions()
_RETRY = RetryPolicy()


@dataclass(frozen=True)
class EvolvePreview:
    """What ``evolve(dry_run=True)`` would do: the plan and a timed estimate. Nothing changed."""

    plan: dict[str, object]  # Plan.describe(): source, target, strategy, alias, rows, ...
    estimate: Estimate

    def as_dict(self) -> dict[str, object]:
        return {**self.plan, "estimate": self.estimate.__dict__, "dry_run": True}


@dataclass(frozen=True)
class VerifyResult(VerifyReport):
    """A migration re-checked: every source id present, sampled vectors equal adapter(old)."""

    migration: str
    target: str  # the evolved collection


def adapter_paths(adapter: AdapterPaths) -> list[Path]:
    paths = [Path(adapter)] if isinstance(adapter, (str, Path)) else [Path(a) for a in adapter]
    if not paths:
        raise InputError("no adapter given; pass the artifact directory written by train")
    return paths


def build_plan(
    store: VectorStore, collection: str, adapters: list[Path], threads: int, **kwargs: Any
) -> Plan:
    from dmu_migrate.artifact import load_artifact
    from dmu_migrate.evolve.plan import make_plan
    from dmu_migrate.evolve.transform import AdapterChain

    chain = AdapterChain([load_artifact(a) for a in adapters], threads)
    return make_plan(store, collection, chain, **kwargs)


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


def evolve(
    collection: str,
    adapter: AdapterPaths,
    uri: str = "milvus.db",
    token: str | None = None,
    strategy: str = NEW_COLLECTION,
    alias: str | None = None,
    vector_field: str | None = None,
    target_field: str | None = None,
    filter: str | None = None,
    batch_size: int = _OPTIONS.batch_size,
    threads: int = 0,
    read_ahead: int = _OPTIONS.read_ahead,
    full_verify: bool = _OPTIONS.full_verify,
    max_seconds: float | None = _OPTIONS.max_seconds,
    take_over: bool = _OPTIONS.take_over,
    restart: bool = _OPTIONS.restart,
    reapply: bool = _OPTIONS.reapply,
    write_path: str = _OPTIONS.write_path,
    bulk_storage: str | Path | None = _OPTIONS.bulk_storage,
    yes_overwrite: bool = False,
    accept_regression: bool = False,
    across_metric: bool = False,
    max_retries: int = _RETRY.max_retries,
    timeout: float = _RETRY.timeout,
    skip_bad_vectors: bool = _OPTIONS.skip_bad_vectors,
    snapshot_dir: str | Path = _OPTIONS.snapshot_root,
    dry_run: bool = False,
    shards: int | None = None,
    workers: int = 1,
    shard: str | None = None,
    engine: str = ENGINES[0],
    ray_address: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> EvolveResult | EvolvePreview:
    """Evolve the stored old vectors of ``collection`` through ``adapter``, verify, cut over.

    Resumable and idempotent: a ledger in the store records the cursor, and a
    run after a finished one only brings the target in step with the source.
    ``result.outcome == "remaining"`` means ``max_seconds`` stopped it: call
    again to continue. ``dry_run`` returns an EvolvePreview and changes nothing.
    ``on_progress(phase, done, total)`` is called as each phase moves: "split",
    "evolve", "id diff", "catch-up", "verify" (see dmu_migrate/evolve/progress.py);
    a callback that takes two arguments hears evolve alone, as ``(rows_done, rows_total)``.
    ``write_path`` is "insert" (upsert batches), "bulk" (a Milvus server imports
    the main pass from files written to ``bulk_storage``, a directory it shares)
    or "auto" (bulk when ``bulk_storage`` is given and the source is large);
    bulk runs unsharded.
    """
    from dmu_migrate.api.sharding import Fanout, run_fanout
    from dmu_migrate.evolve.pipeline import evolve as run_evolve
    from dmu_migrate.evolve.plan import estimate

    adapters = adapter_paths(adapter)
    check_flags(batch_size, threads, read_ahead, max_seconds, max_retries, timeout)
    check_range("--workers", workers, 1, 256)
    if write_path not in WRITE_PATHS:
        raise InputError(
            f"--write-path must be one of {', '.join(WRITE_PATHS)}, got '{write_path}'"
        )
    fanout = Fanout.from_flags(shards, workers, shard, engine, ray_address)
    if fanout.sharded and write_path != INSERT:
        raise InputError("--write-path bulk/auto runs unsharded; drop --shards")
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
        plan = build_plan(store, collection, adapters, threads, **plan_args)
        if dry_run:
            return EvolvePreview(plan.describe(), estimate(store, plan, batch_size))
        options = EvolveOptions(
            batch_size,
            max_seconds,
            take_over,
            restart,
            Path(snapshot_dir),
            skip_bad_vectors,
            RetryPolicy(max_retries, timeout),
            read_ahead,
            full_verify,
            reapply,
            write_path,
            None if bulk_storage is None else str(bulk_storage),
        )
        if not fanout.sharded:
            return run_evolve(store, plan, options, on_progress)
        # Ray workers on other machines lack this one's environment: pass the token.
        job = fanout.job(
            uri, resolve_token(uri, token), collection, adapters, threads, plan_args, options
        )
        return run_fanout(store, plan, fanout, job, on_progress)


def verify(
    collection: str,
    adapter: AdapterPaths,
    uri: str = "milvus.db",
    token: str | None = None,
    vector_field: str | None = None,
    strategy: str = NEW_COLLECTION,
    target_field: str | None = None,
    alias: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> VerifyResult:
    """Re-check a migration: every source id present, sampled vectors equal adapter(old).

    Raises VerificationError when they do not, StoreError when there is no
    evolved collection to check. ``on_progress("verify", ids_checked, source_rows)``
    is called as the ids are compared.
    """
    from dmu_migrate.evolve.ledger import Ledger
    from dmu_migrate.evolve.progress import reporter
    from dmu_migrate.evolve.strategies import make_strategy
    from dmu_migrate.evolve.verify import verify as run_verify

    adapters = adapter_paths(adapter)
    with opened(uri, token) as store:
        plan = build_plan(
            store,
            collection,
            adapters,
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
                f"'{plan.target}' does not exist, so there is nothing to verify; run evolve first"
            )
        record = Ledger(store).load(plan.key)
        snapshot_root = Path((record and record.snapshot) or _OPTIONS.snapshot_root).parent
        skipped = frozenset(record.skipped if record else [])
        writer = make_strategy(store, plan, snapshot_root)
        # The sampled vectors are drawn from the id scan that checks every id.
        report = run_verify(store, plan, writer, None, skipped, report=reporter(on_progress))
    return VerifyResult(**report.as_dict(), migration=plan.key, target=plan.target)  # type: ignore[arg-type]
