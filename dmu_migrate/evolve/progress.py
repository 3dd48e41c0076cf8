"""Progress of a run, phase by phase, for whoever called the library (which never prints).

A run goes through phases, each a count that only grows, ending at its total:

    split     ids read to find the shards' cut points (sharded runs, once)
    evolve    rows written by the main pass (over the whole migration, so a resumed
              run starts where the last one stopped)
    id diff   source ids compared with the target's, to find rows to catch up
    catch-up  rows written or deleted to bring the target in step with the source
    verify    source ids checked present in the target (then the sampled vectors)

plan-backfill and backfill (evolve/backfill_*.py) go through phases of their own:

    native ids  ids of the evolved rows already re-embedded natively, read to leave
                them out of a plan (plan-backfill, once a migration has a target)
    score       stored old vectors read and scored (natively re-embedded ones are
                read and skipped), of the collection's row count
    untag       evolved rows holding a rank gone through, the ones an earlier plan
                ranked and this one does not cleared (--tag)
    tag         planned rows whose rank was written into the evolved collection (--tag)
    input check rows of the backfill input checked, before the first write
    backfill    rows written and read back, of the rows given (a resumed run starts
                where the last one stopped)

The callback is ``on_progress(phase, done, total)``; ``total`` is None where no
count is known. Totals are estimates made when a phase starts (the source keeps
changing): a phase's last report gives the count it reached as its total.

Two levels: a function that runs a whole phase takes the caller's ``Report``
(``quiet`` when nobody listens) and opens the phase's ``Meter``; a helper that
counts inside a phase someone else opened takes that ``Meter`` (or None).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

SPLIT, EVOLVE, ID_DIFF, CATCH_UP, VERIFY = "split", "evolve", "id diff", "catch-up", "verify"
NATIVE_IDS, SCORE, UNTAG, TAG = "native ids", "score", "untag", "tag"
INPUT_CHECK, BACKFILL = "input check", "backfill"
PHASES = (
    SPLIT,
    EVOLVE,
    ID_DIFF,
    CATCH_UP,
    VERIFY,
    NATIVE_IDS,
    SCORE,
    UNTAG,
    TAG,
    INPUT_CHECK,
    BACKFILL,
)

Report = Callable[[str, int, int | None], None]  # (phase, done, total)
T = TypeVar("T")


def quiet(phase: str, done: int, total: int | None) -> None:
    """The report of a caller that passed no callback."""


def reporter(callback: Report | None) -> Report:
    """The report a run sends its phases to: the caller's callback, or ``quiet``."""
    return quiet if callback is None else callback


@dataclass
class Meter:
    """One phase's count, reported each time it grows and once more when the phase ends."""

    report: Report
    phase: str
    total: int | None = None
    done: int = 0

    def start(self) -> Meter:
        """Show the phase at once, before its first (possibly slow) page arrives."""
        self.report(self.phase, self.done, self.total)
        return self

    def add(self, n: int) -> None:
        self.done += n
        self.report(self.phase, self.done, self.total)

    def end(self) -> None:
        # Rows inserted or deleted since the estimate: the count reached is the total.
        self.total = self.done
        self.report(self.phase, self.done, self.total)

    def pages(self, pages: Iterable[T], size: Callable[[T], int]) -> Iterator[T]:
        """``pages`` as they are, each counted (``size(page)`` ids) once the consumer took it."""
        for page in pages:
            yield page
            self.add(size(page))
