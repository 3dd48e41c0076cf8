"""Verification of a migration before cut-over: ids, counts, vectors.

Any mismatch raises VerificationError before the alias moves, so readers
never see an unverified target.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dmu_migrate.errors import VerificationError
from dmu_migrate.evolve import NEW_COLLECTION
from dmu_migrate.evolve.id_diff import ID_BATCH as ID_BATCH
from dmu_migrate.evolve.id_diff import VERIFY_SAMPLE as VERIFY_SAMPLE
from dmu_migrate.evolve.id_diff import Reservoir as Reservoir
from dmu_migrate.evolve.id_diff import diff_sorted as diff_sorted
from dmu_migrate.evolve.progress import VERIFY, Meter, Report, quiet
from dmu_migrate.evolve.screen import still_bad
from dmu_migrate.evolve.self_search import SEARCH_K, SelfSearch, judge, second_look, self_search
from dmu_migrate.evolve.stream import Stage
from dmu_migrate.evolve.sync import compare
from dmu_migrate.stores.base import VectorStore, id_array

if TYPE_CHECKING:
    from dmu_migrate.evolve.plan import Plan
    from dmu_migrate.evolve.strategies import Strategy

VERIFY_TOLERANCE = 1e-5


def diff_ids(
    store: VectorStore,
    plan: Plan,
    strategy: Strategy,
    sample: Reservoir | None = None,
    meter: Meter | None = None,
) -> tuple[list[Any], list[Any]]:
    """(source ids not at the target version, target ids not in the source).

    Both scans stream in key order and run ahead in their own threads, so the
    two reads overlap each other and the merge. ``sample``, if given, draws
    from every source id on the way; ``meter``, if given, counts them as merged.
    """
    with (
        Stage(store.iter_ids(plan.source.name, ID_BATCH, plan.filter), 2, "dmu-ids") as source,
        Stage(strategy.written_ids() or iter(()), 2, "dmu-written") as written,
    ):
        ids: Iterable[np.ndarray] = sample.tee(source) if sample else source
        return diff_sorted(meter.pages(ids, len) if meter else ids, written)


@dataclass(frozen=True)
class VerifyReport:
    source_rows: int
    target_rows: int
    missing: int
    sampled: int
    max_abs_error: float
    searched: int  # sampled rows found by searching the target with their own vectors
    search: str  # how that search ran and what it found (evolve/self_search.py)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def verify(
    store: VectorStore,
    plan: Plan,
    strategy: Strategy,
    ids: np.ndarray | None,
    skipped: frozenset[Any] = frozenset(),
    diffed: bool = False,
    report: Report = quiet,
) -> VerifyReport:
    """Every source row is at the target version, and a sample equals adapter(old) to 1e-5.

    ``diffed`` says the caller has just compared the full id sets, after every
    write, and found nothing missing; the id scans are then not repeated.
    ``ids`` are the rows whose vectors are checked; None draws them from the id
    scan (so a re-check reads the source's ids once, not once more for a sample).
    """
    source_rows = store.count(plan.source.name, plan.filter)
    meter = Meter(report, VERIFY, source_rows).start()
    drawn = Reservoir(VERIFY_SAMPLE, skipped)  # of the rows that are there to check
    missing: list[Any] = []
    if not diffed and plan.strategy == NEW_COLLECTION:
        # Both directions: no source row missing, no evolved row whose source row is gone.
        # Rows the application wrote (dmu_origin not 'evolved') count as present, never extra.
        compared = compare(store, plan, hashed=False, meter=meter, skipped=skipped)
        drawn = compared.sample
        missing = compared.missing
        if compared.extra:
            raise VerificationError(
                f"{len(compared.extra)} evolved rows of '{plan.target}' (first: {compared.extra[:3]}) "
                f"are no longer in '{plan.source.name}'; run evolve again to delete them"
            )
    elif not diffed:
        missing, _extra = diff_ids(store, plan, strategy, drawn, meter)
    elif ids is None:
        raise ValueError("verify(diffed=True) needs the ids to check")  # a caller's bug
    left_out = [i for i in missing if i in skipped]
    if left_out:  # bad vectors left out on purpose, unless fixed in the source since
        bad = still_bad(store, plan, left_out)
        missing = [i for i in missing if i not in bad]
    if ids is None:
        ids = id_array([i for i in drawn.ids().tolist() if i not in skipped])
    if missing:
        raise VerificationError(
            f"{len(missing)} rows of '{plan.source.name}' (first: {missing[:3]}) are not in "
            f"'{plan.target}'; nothing was cut over, run evolve again to finish"
        )
    target_rows = (
        store.count(plan.target, plan.filter) if plan.target != plan.source.name else source_rows
    )
    if plan.target != plan.source.name and target_rows < source_rows - len(skipped):
        raise VerificationError(
            f"collection '{plan.target}' has {target_rows} rows but '{plan.source.name}' has "
            f"{source_rows}; nothing was cut over, run evolve again to finish"
        )
    ids = strategy.evolved_only(ids)  # the application's own rows are not adapter output
    misplaced = strategy.misplaced(ids)
    if misplaced:
        raise VerificationError(
            f"{len(misplaced)} sampled rows of '{plan.target}' (first: {misplaced[:3]}) are in "
            f"another partition than in '{plan.source.name}'; nothing was cut over, run evolve "
            f"again to move them"
        )
    error = 0.0
    stored = np.zeros((0, plan.chain.out_dim), np.float32)
    if len(ids):
        expected = strategy.expected(ids)
        stored = strategy.read_back(ids)
        error = float(np.abs(expected - stored).max())
        if not error <= VERIFY_TOLERANCE:
            raise VerificationError(
                f"evolved vectors in '{plan.target}' differ from the adapter output by {error:.2e} "
                f"(limit {VERIFY_TOLERANCE:.0e}): the source changed since they were evolved, or "
                f"they were overwritten; nothing was cut over, run evolve again to re-evolve them"
            )
    # Every sampled row, not a few: the search is judged by its recall over the sample.
    # A target held to its source's index (self_search): only where the source is another
    # collection, whose index the target's was copied from.
    apart = plan.target != plan.source.name
    baseline = (lambda: source_search(store, plan, ids)) if apart else None
    found = self_search(store, plan.target, plan.target_field, ids, stored, baseline)
    if diffed:  # every id was shown present by the caller's diff or the counts
        meter.done = source_rows
    meter.end()
    return VerifyReport(
        source_rows, target_rows, len(missing), len(ids), error, found.counted, found.describe()
    )


def source_search(store: VectorStore, plan: Plan, ids: np.ndarray) -> SelfSearch:
    """The source searched with its own vectors of ``ids``: what the target is held to when
    its index finds too few of them."""
    vectors = store.fetch(plan.source, ids, plan.source.vector_field).vectors
    hits = store.search(plan.source.name, plan.source.vector_field, vectors, SEARCH_K)
    first = judge(ids.tolist(), vectors, hits)
    return second_look(store, plan.source.name, plan.source.vector_field, first, vectors, ids)
