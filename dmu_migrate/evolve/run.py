"""One leased run over a ledger record: what every step of an evolve shares.

The main pass, a shard's pass, the split's coordinator and the finish each
take a Run rather than the same ten arguments: the store and plan, the
options, the ledger and its record (held under this run's lease), the
strategy that writes, the retrier, the result being filled in, the progress
report, the verification sample and the clock. ``recorded()`` is the frame
around the leased work: whatever ends it goes on record and the lease is
always released.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from dmu_migrate.errors import DmuError
from dmu_migrate.evolve.id_diff import VERIFY_SAMPLE, Reservoir
from dmu_migrate.evolve.ledger import FAILED, LEASE_SECONDS, STOPPED, Ledger, Record
from dmu_migrate.evolve.plan import Plan
from dmu_migrate.evolve.progress import Report, quiet
from dmu_migrate.evolve.retry import Retrier
from dmu_migrate.evolve.settings import EvolveOptions
from dmu_migrate.evolve.strategies import Strategy, make_strategy
from dmu_migrate.evolve.verify import VerifyReport
from dmu_migrate.stores.base import VectorStore

log = logging.getLogger(__name__)
T = TypeVar("T")

EXIT_REMAINING = 75  # EX_TEMPFAIL: stopped at --max-seconds, run again to continue


class Outcome(StrEnum):
    """How a run ended; its value is what --json and the metrics file show."""

    DONE = "done"  # verified and cut over (a re-run: brought in step)
    REMAINING = "remaining"  # stopped at max_seconds; the next run resumes (EXIT_REMAINING)
    SHARD_DONE = "shard done"  # --shard i/N finished its range; others are still running


@dataclass
class EvolveResult:
    migration: str
    outcome: Outcome
    strategy: str
    source: str
    target: str
    target_field: str
    alias: str | None
    rows_written: int  # in this run
    rows_done: int  # over the whole migration
    rows_total: int
    caught_up: int  # rows found missing by the id diff and written
    resumed: bool
    seconds: float
    cut_over: str = ""
    retries: int = 0  # passing store failures retried during this run
    verify: VerifyReport | None = None
    notes: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step of this run
    id_check: str = "full diff"  # or "counts": how every source row was shown to be at the target
    shards: list[dict[str, Any]] = field(default_factory=list)  # per shard, sharded runs only
    updated: int = 0  # evolved again: their source vector changed since
    deleted: int = 0  # evolved rows whose source row is gone
    native: int = 0  # target rows the application wrote, left alone

    @classmethod
    def begin(cls, plan: Plan, record: Record, resumed: bool) -> EvolveResult:
        """The result of a run that has just started on ``record``."""
        return cls(
            plan.key,
            Outcome.DONE,
            plan.strategy,
            plan.source.name,
            plan.target,
            plan.target_field,
            plan.alias,
            rows_written=0,
            rows_done=record.rows_done,
            rows_total=plan.rows,
            caught_up=0,
            resumed=resumed,
            seconds=0.0,
        )

    def as_dict(self) -> dict[str, object]:
        out = dict(self.__dict__)
        out["outcome"] = str(self.outcome)
        out["verify"] = self.verify.as_dict() if self.verify else None
        return out


@dataclass
class Run:
    """One run's shared state; built once the record is read, before its lease is taken."""

    store: VectorStore
    plan: Plan
    options: EvolveOptions
    ledger: Ledger
    retry: Retrier
    record: Record
    result: EvolveResult
    report: Report = quiet
    start: float = field(default_factory=time.perf_counter)
    # The ids this run wrote, for the vectors verification compares.
    sample: Reservoir = field(default_factory=lambda: Reservoir(VERIFY_SAMPLE))
    strategy: Strategy = field(init=False)

    def __post_init__(self) -> None:
        self.strategy = make_strategy(self.store, self.plan, self.options.snapshot_root)

    def step(
        self, what: str, work: Callable[[], T], progress: Callable[[], Any] | None = None
    ) -> T:
        """``work``, retried on passing store failures; ``what`` names it in errors and logs."""
        return self.retry.run(what, work, progress=progress)

    def save(self) -> None:
        self.step("saving the ledger", lambda: self.ledger.save(self.record))

    def reload(self) -> Record:
        """The record as the ledger holds it now (another process may have moved it)."""
        record = self.step("reading the ledger", lambda: self.ledger.load(self.plan.key))
        assert record is not None, f"{self.plan.key} vanished from the ledger"
        self.record = record
        return record

    def timed(self, phase: str, work: Callable[[], T]) -> T:
        """``work``, its seconds added to the result's phases under ``phase``."""
        clock = time.perf_counter()
        try:
            return work()
        finally:
            self.result.phases[phase] = time.perf_counter() - clock

    @contextmanager
    def recorded(self) -> Iterator[Run]:
        """Around leased work: a failure of any kind goes on record; totals and the lease always."""
        record, result = self.record, self.result
        failure: BaseException | None = None
        try:
            yield self
        except DmuError as exc:
            failure = exc
            record.status, record.error = FAILED, str(exc)
            raise
        except KeyboardInterrupt as exc:
            failure = exc
            record.status, record.error = STOPPED, "interrupted"
            raise
        except BaseException as exc:  # a bug: still on record, never left 'running'
            failure = exc
            record.status, record.error = FAILED, f"{type(exc).__name__}: {exc}"
            raise
        finally:
            result.rows_done = record.rows_done
            result.retries += self.retry.retries
            try:
                self.step("releasing the lease", lambda: self.ledger.release(record))
            except DmuError as exc:  # the lease expires by itself; keep the first error visible
                log.warning("could not release the lease of %s: %s", record.key, exc)
                if isinstance(failure, DmuError):
                    # The advice must match what the next run will meet: a lease still held.
                    failure.args = (
                        f"{failure}; the lease could not be released either, so the next run "
                        f"needs --take-over (or waits {LEASE_SECONDS / 60:.0f} minutes)",
                    )
            result.seconds = time.perf_counter() - self.start

    def stopped(self) -> EvolveResult:
        """The run ends early (max_seconds): no process runs it now; the next one resumes."""
        self.result.outcome = Outcome.REMAINING
        self.record.status = STOPPED
        return self.result
