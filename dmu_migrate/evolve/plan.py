"""What an evolve run will do, decided and checked before anything is written."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dmu_migrate.artifact import load_artifact
from dmu_migrate.errors import AccessDenied, InputError, NothingToDo, StoreError, StoreUnavailable
from dmu_migrate.evolve import IN_PLACE, NEW_COLLECTION, STRATEGIES
from dmu_migrate.evolve import NEW_FIELD as NEW_FIELD  # the strategies import it from here
from dmu_migrate.evolve.ledger import PRUNED, Ledger, Record
from dmu_migrate.evolve.screen import bad_rows
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.quality import check_gate, transition_hint, validated_where, verdict
from dmu_migrate.stores.base import (
    RESERVED_NAMES,
    TAG_FROM,
    TAG_ORIGIN,
    TAG_VERSION,
    CollectionInfo,
    VectorStore,
)
from dmu_migrate.stores.pair import home

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    key: str  # the ledger key of this migration
    strategy: str
    source: CollectionInfo
    target: str  # collection written (new-collection) or the source itself
    target_field: str  # vector field written
    alias: str | None  # alias moved at cut-over (new-collection only)
    chain: AdapterChain
    filter: str | None
    rows: int  # source rows the filter selects
    # The source's store when it is another than the target's (evolve --target-uri).
    source_uri: str | None = None

    @property
    def tags(self) -> dict[str, str]:
        return {
            TAG_VERSION: self.chain.to_version,
            TAG_FROM: self.chain.from_version,
            TAG_ORIGIN: "evolved",
        }

    def new_record(self) -> Record:
        return Record(
            key=self.key,
            source=self.source.name,
            target=self.target
            if self.strategy == NEW_COLLECTION
            else f"{self.target}.{self.target_field}",
            strategy=self.strategy,
            alias=self.alias,
            vector_field=self.source.vector_field,
            target_field=self.target_field,
            adapters=[a.manifest.name for a in self.chain.artifacts],
            checksum=self.chain.checksum,
            from_version=self.chain.from_version,
            to_version=self.chain.to_version,
            filter=self.filter,
            source_rows=self.rows,
            source_uri=self.source_uri,
            quality="; ".join(
                f"{a.manifest.name}: "
                f"{verdict(a.validated, validated_where(a.manifest.quality, a.manifest.name)).line}"
                for a in self.chain.artifacts
            ),
        )

    def describe(self) -> dict[str, object]:
        across = {"source_uri": self.source_uri} if self.source_uri else {}
        return {
            **across,
            "migration": self.key,
            "strategy": self.strategy,
            "source": self.source.name,
            "vector_field": self.source.vector_field,
            "target": self.target,
            "target_field": self.target_field,
            "alias": self.alias,
            "adapters": [a.manifest.name for a in self.chain.artifacts],
            "versions": f"{self.chain.from_version} -> {self.chain.to_version}",
            "dims": f"{self.chain.in_dim} -> {self.chain.out_dim}",
            "filter": self.filter,
            "rows": self.rows,
        }


def target_name(source: str, from_version: str, to_version: str) -> str:
    """``faces__v1`` -> ``faces__v2``; ``faces`` -> ``faces__v2``."""
    suffix = f"__{from_version}"
    base = source[: -len(suffix)] if source.endswith(suffix) else source
    return f"{base}__{to_version}"


NORM_TOLERANCE = 1e-3  # stored float32 unit vectors differ from norm 1 by ~1e-7


def check_metric(store: VectorStore, info: CollectionInfo, chain: AdapterChain) -> None:
    """Refuse an upgrade that would silently change what the collection's scores mean.

    Every artifact writes unit vectors trained for cosine similarity. On a
    COSINE collection, or an IP/L2 one that already holds unit vectors, scores
    keep their meaning (IP equals cosine, L2 is a function of it). On an IP/L2
    collection of vectors of other norms, thresholds and any magnitude the
    scores carried would change without a word. The median norm of the first
    rows decides, so that a few corrupt rows (the screen's business) do not; rows the
    screen refuses or leaves out (NaN, inf, all zero) have no norm to count.
    """
    for artifact in chain.artifacts:
        m = artifact.manifest
        if str(m.metric).lower() != "cosine" or not m.normalized:
            raise InputError(
                f"adapter '{m.name}' declares metric '{m.metric}' (normalized: {m.normalized}), "
                f"but evolve writes unit vectors for cosine; re-export it with dmu-migrate "
                f"train, or pass --across-metric to evolve across them"
            )
    if info.metric.upper() == "COSINE":
        return
    batch = next(iter(store.iter_batches(info, 256)), None)
    if batch is None or not len(batch):
        return
    vectors = batch.vectors[~bad_rows(batch.vectors)]
    if not len(vectors):
        return
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    if abs(float(np.median(norms)) - 1.0) <= NORM_TOLERANCE:
        return
    raise InputError(
        f"collection '{info.name}' scores by {info.metric} and stores vectors of median norm "
        f"{float(np.median(norms)):.3g}, but adapter '{chain.name}' writes unit vectors for "
        f"cosine, which changes every score; pass --across-metric to evolve anyway"
    )


def gate(chain: AdapterChain, accept_regression: bool) -> None:
    """Refuse, before anything is written, an upgrade validated as worse than today's system."""
    for artifact in chain.artifacts:
        where = validated_where(artifact.manifest.quality, artifact.manifest.name)
        if accept_regression:
            result = verdict(artifact.validated, where)
            if result.deploy is False:
                log.warning("--accept-regression: %s", result.line)
            continue
        hint = transition_hint(
            artifact.manifest.quality, str(artifact.path), artifact.manifest.method
        )
        result = check_gate(artifact.manifest.name, artifact.validated, hint, where)
        if result.deploy is None:
            log.warning("adapter '%s': %s", artifact.manifest.name, result.line)


def plan_for(
    store: VectorStore, collection: str, adapters: list[Path], threads: int, **kwargs: Any
) -> Plan:
    """The plan of evolving ``collection`` through the artifacts at ``adapters`` (oldest
    first), run with ``threads`` onnxruntime threads (0: its default); ``kwargs`` are
    make_plan's. What evolve, verify and every shard worker plan with."""
    chain = AdapterChain([load_artifact(Path(a)) for a in adapters], threads)
    return make_plan(store, collection, chain, **kwargs)


def make_plan(
    store: VectorStore,
    collection: str,
    chain: AdapterChain,
    strategy: str = NEW_COLLECTION,
    alias: str | None = None,
    vector_field: str | None = None,
    target_field: str | None = None,
    filter: str | None = None,
    yes_overwrite: bool = False,
    accept_regression: bool = False,
    across_metric: bool = False,
) -> Plan:
    if not collection.strip():
        raise InputError("--collection is empty; give the collection or alias to evolve")
    if strategy not in STRATEGIES:
        raise InputError(f"unknown --strategy '{strategy}'; use one of {', '.join(STRATEGIES)}")
    info = upgraded_source(store, store.describe(collection, vector_field), chain)
    check_source(store, info, chain)
    if info.dim != chain.in_dim:
        raise InputError(
            f"collection '{collection}' has {info.dim}-d vectors in '{info.vector_field or 'default'}' "
            f"but adapter '{chain.name}' expects {chain.in_dim}-d; use the adapter trained for "
            f"this collection"
        )
    rows = store.count(info.name, filter) if filter else info.count
    if info.count == 0:
        raise InputError(f"collection '{collection}' is empty; there is nothing to evolve")
    if rows == 0:
        raise InputError(f"--filter selects no rows of '{collection}'; check the expression")
    if not across_metric:
        check_metric(store, info, chain)
    # The ledger record names the store it read when that is another than the ledger's.
    source_uri = home(store).uri if home(store) is not store else None

    if strategy == IN_PLACE or (strategy == NEW_COLLECTION and filter is None):
        # Both change what the application's queries search; new-field and a
        # --filter subset leave that to an explicit step.
        gate(chain, accept_regression)
    if strategy == NEW_COLLECTION:
        alias = resolve_alias(store, info, alias)
        target = target_name(info.name, chain.from_version, chain.to_version)
        if target == info.name:
            raise InputError(
                f"collection '{info.name}' already holds version '{chain.to_version}'; "
                f"nothing to evolve"
            )
        return Plan(
            f"{info.name}->{target}",
            strategy,
            info,
            target,
            info.vector_field,
            alias,
            chain,
            filter,
            rows,
            source_uri,
        )

    if alias is not None:
        raise InputError(f"--alias applies to --strategy new-collection only, not {strategy}")
    if strategy == IN_PLACE:
        if not yes_overwrite:
            raise InputError(
                f"--strategy in-place overwrites the vectors of '{info.name}'; pass "
                f"--yes-overwrite to confirm (a Parquet snapshot is written first)"
            )
        if chain.out_dim != info.dim:
            raise InputError(
                f"in-place needs the evolved size to equal the stored one ({info.dim}-d), but "
                f"adapter '{chain.name}' writes {chain.out_dim}-d; use --strategy new-collection"
            )
        field = info.vector_field
    else:
        default = (
            f"{info.vector_field}_{chain.to_version}" if info.vector_field else chain.to_version
        )
        field = target_field or default
        existing = info.vector_fields.get(field)
        if existing is not None and existing != chain.out_dim:
            raise InputError(
                f"vector field '{field}' of '{info.name}' is {existing}-d but the adapter writes "
                f"{chain.out_dim}-d; choose another --target-field"
            )
    return Plan(
        f"{info.name}.{info.vector_field}->{field}@{chain.to_version}",
        strategy,
        info,
        info.name,
        field,
        None,
        chain,
        filter,
        rows,
        source_uri,
    )


def upgraded_source(
    store: VectorStore, info: CollectionInfo, chain: AdapterChain
) -> CollectionInfo:
    """After cut-over the alias names the evolved collection; re-runs must read its source.

    Cron runs the same command every time: without this, the second run would
    evolve the evolved vectors again (v2 -> "v3" through a v1 -> v2 adapter).
    """
    if info.alias is None:
        return info
    # The ledger of the store the alias lives in (evolve --target-uri: the source's).
    where = home(store)
    for record in Ledger(where).records():
        if (
            record.strategy == NEW_COLLECTION
            and record.target == info.name
            and record.to_version == chain.to_version
            and info.alias in (record.alias, *record.moved_aliases)
        ):
            if record.status == PRUNED:
                raise NothingToDo(
                    f"'{record.source}' was pruned after migration '{record.key}'; alias "
                    f"'{info.alias}' serves '{record.target}' and there is nothing left to evolve"
                )
            if record.source_uri:  # evolved into this store from another
                raise InputError(
                    f"alias '{info.alias}' serves '{record.target}', which migration "
                    f"'{record.key}' evolved from '{record.source}' of '{record.source_uri}'; "
                    f"run evolve with --uri {record.source_uri} --target-uri {store.uri} to "
                    f"bring it in step"
                )
            if where is not store:
                raise InputError(
                    f"'{record.target}' in '{where.uri}' already holds version "
                    f"'{record.to_version}' (migration '{record.key}' evolved it there); pass "
                    f"--collection {record.source} to evolve the old vectors into the other store"
                )
            source = store.describe(record.source, record.vector_field)
            return replace(source, requested=info.requested, alias=info.alias)
    return info


# Values evolve itself writes into dmu_origin (rollback of in-place writes "restored").
ORIGINS = ["evolved", "native", "restored"]


def check_source(store: VectorStore, info: CollectionInfo, chain: AdapterChain) -> None:
    """Refuse, before anything is written, a source evolve cannot copy faithfully: one
    whose own fields carry the tag names, or that holds what create_like cannot make.

    Tags in a collection that evolve wrote (a chained upgrade's source, an in-place
    run resumed) hold this chain's versions and known origins; anything else there is
    the user's data, which evolve would overwrite in every row.
    """
    versions = [a.manifest.from_version for a in chain.artifacts] + [chain.to_version]
    known: dict[str, list[str]] = {TAG_ORIGIN: ORIGINS, TAG_VERSION: versions}
    # Every reserved name is checked. Those without a fixed set of values (the version
    # evolved from, the source checksum) must at least not stand alone: evolve writes
    # them on a row together with its origin tag, so a row holding one without it is
    # the user's.
    allowed = {name: known.get(name) for name in RESERVED_NAMES}
    problem = store.source_problem(info.name, allowed)
    if problem:
        raise InputError(f"collection '{info.name}' {problem}")


def resolve_alias(store: VectorStore, info: CollectionInfo, alias: str | None) -> str:
    """The alias to move at the end: the one the user queried through, or --alias."""
    alias = alias or info.alias
    if alias is None:
        raise InputError(
            f"'{info.requested}' is a collection, not an alias, so there is nothing to re-point; "
            f"pass --alias NAME to create the alias your queries will use"
        )
    try:
        clash = store.alias_target(alias) is None and store.has_collection(alias)
    except (AccessDenied, StoreUnavailable):
        raise  # the user, or the moment, was refused; not the name
    except StoreError as exc:  # the store refused the name itself
        refused = exc.__cause__ or exc  # the store's own words, as it mapped them
        raise InputError(
            f"--alias '{alias}' is not a name '{store.uri}' accepts "
            f"({' '.join(str(refused).split())[:160]}); use letters, digits and underscores"
        ) from exc
    if clash:
        raise InputError(
            f"--alias '{alias}' is the name of a collection, not an alias; choose another name"
        )
    return alias


@dataclass(frozen=True)
class Estimate:
    rows: int
    sample_rows: int
    read_transform_rows_per_s: float
    seconds_read_transform: float  # writes add to this; they are not timed in a dry run


def estimate(store: VectorStore, plan: Plan, batch_size: int) -> Estimate:
    """Time one real batch of reading and transforming (no writes) and extrapolate."""
    start = time.perf_counter()
    n = 0
    for batch in store.iter_batches(plan.source, batch_size, filter=plan.filter):
        plan.chain(batch.vectors)
        n = len(batch)
        break
    elapsed = max(time.perf_counter() - start, 1e-9)
    rate = n / elapsed
    return Estimate(plan.rows, n, rate, plan.rows / rate if rate else float("inf"))
