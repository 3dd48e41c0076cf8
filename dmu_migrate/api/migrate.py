"""The verbs that move stored vectors: evolve and verify (no torch on this path)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmu_migrate.api.sharding import Fanout, run_fanout
from dmu_migrate.api.store import crosses, opened_for, resolve_target_token, resolve_token
from dmu_migrate.errors import InputError, StoreError
from dmu_migrate.evolve import NEW_COLLECTION
from dmu_migrate.evolve.ledger import Ledger
from dmu_migrate.evolve.pipeline import evolve as run_evolve
from dmu_migrate.evolve.plan import Estimate, estimate, plan_for
from dmu_migrate.evolve.progress import Report, reporter
from dmu_migrate.evolve.run import EvolveResult
from dmu_migrate.evolve.settings import MAX_BATCH as MAX_BATCH  # where backfill imports it from
from dmu_migrate.evolve.settings import EvolveOptions, EvolveSettings, evolve_settings
from dmu_migrate.evolve.strategies import make_strategy
from dmu_migrate.evolve.verify import VerifyReport
from dmu_migrate.evolve.verify import verify as run_verify

# One artifact directory, or several to chain upgrades (oldest first).
AdapterPaths = str | Path | Sequence[str | Path]


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


def refuse_across(s: EvolveSettings) -> None:
    """What evolve --target-uri does not do (yet), refused before any store is opened."""
    if s.strategy != NEW_COLLECTION:
        raise InputError(
            f"--target-uri writes a new collection into the other store; --strategy "
            f"{s.strategy} works within one store, so drop --target-uri or the strategy"
        )


def evolve(
    collection: str,
    adapter: AdapterPaths,
    *,
    uri: str = "milvus.db",
    token: str | None = None,
    config_file: str | Path | None = None,
    on_progress: Report | None = None,
    target_token: str | None = None,
    **settings: Any,
) -> EvolveResult | EvolvePreview:
    """Evolve the stored old vectors of ``collection`` through ``adapter``, verify, cut over.

    ``settings`` are EvolveSettings fields (dmu_migrate/evolve/settings.py:
    strategy, batch_size, max_seconds, shards, ...), with its defaults; they
    override the TOML ``config_file``; an unknown name is an InputError.
    Resumable and idempotent: a ledger in the store records the cursor, and a
    run after a finished one only brings the target in step with the source.
    ``result.outcome == "remaining"`` means ``max_seconds`` stopped it: call
    again to continue. ``dry_run`` returns an EvolvePreview and changes nothing.
    ``on_progress(phase, done, total)`` is called as each phase moves: "split",
    "evolve", "id diff", "catch-up", "verify" (see dmu_migrate/evolve/progress.py).
    ``write_path`` is "insert" (upsert batches), "bulk" (a Milvus server imports
    the main pass from files written to ``bulk_storage``, a directory it shares or
    ``s3://BUCKET/PREFIX`` in its bucket)
    or "auto" (bulk when ``bulk_storage`` is given and the source is large);
    with ``target_uri`` bulk imports from another Milvus only.
    ``target_uri`` writes the evolved collection, the ledger and the alias
    (default: ``collection``) into another store, of any kind, opened with
    ``target_token`` (else DMU_TARGET_TOKEN, else that store's own variable); the
    source store is only read (stores/pair.py, stores/crossing.py).
    """
    adapters = adapter_paths(adapter)
    s = evolve_settings(config_file, **settings)
    fanout = Fanout.from_flags(s.shards, s.workers, s.shard, s.engine, s.ray_address)
    across = crosses(uri, s.target_uri)
    if across:
        refuse_across(s)
    threads = fanout.threads(s.threads)
    plan_args = {
        "strategy": s.strategy,
        # In another store the name the application queried is free for the alias.
        "alias": s.alias or (collection if across else None),
        "vector_field": s.vector_field,
        "target_field": s.target_field,
        "filter": s.filter,
        "yes_overwrite": s.yes_overwrite,
        "accept_regression": s.accept_regression,
        "across_metric": s.across_metric,
    }
    options = EvolveOptions.of(s)  # its checks refuse before any store is opened
    with opened_for(uri, token, collection, s.target_uri, target_token, s.filter) as store:
        plan = plan_for(store, collection, adapters, threads, **plan_args)
        if s.dry_run:
            shown = plan.describe()
            if across:
                shown["target_uri"] = store.uri
            return EvolvePreview(shown, estimate(store, plan, s.batch_size))
        if not fanout.sharded:
            return run_evolve(store, plan, options, on_progress)
        # Ray workers on other machines lack this one's environment: pass the token.
        # Workers open the pair of stores as this process did.
        target = (
            (s.target_uri, resolve_target_token(s.target_uri, target_token))
            if across and s.target_uri
            else None
        )
        job = fanout.job(
            uri,
            resolve_token(uri, token),
            collection,
            adapters,
            threads,
            plan_args,
            options,
            target,
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
    on_progress: Report | None = None,
    target_uri: str | None = None,
    target_token: str | None = None,
) -> VerifyResult:
    """Re-check a migration: every source id present, sampled vectors equal adapter(old).

    Raises VerificationError when they do not, StoreError when there is no
    evolved collection to check. ``target_uri``: the migration wrote into that
    store (evolve --target-uri). ``on_progress("verify", ids_checked, source_rows)``
    is called as the ids are compared.
    """
    adapters = adapter_paths(adapter)
    if crosses(uri, target_uri):
        if strategy != NEW_COLLECTION:
            raise InputError(f"--target-uri migrations are new-collection ones, not {strategy}")
        alias = alias or collection  # as evolve --target-uri chose it
    with opened_for(uri, token, collection, target_uri, target_token) as store:
        plan = plan_for(
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
        snapshot_root = Path((record and record.snapshot) or EvolveSettings().snapshot_dir).parent
        skipped = frozenset(record.skipped if record else [])
        writer = make_strategy(store, plan, snapshot_root)
        # The sampled vectors are drawn from the id scan that checks every id.
        report = run_verify(store, plan, writer, None, skipped, report=reporter(on_progress))
    return VerifyResult(**report.as_dict(), migration=plan.key, target=plan.target)  # type: ignore[arg-type]
