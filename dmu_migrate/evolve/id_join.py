"""A merge-join of two id-sorted page streams, a window of pages at a time, in numpy.

Catch-up and verification compare every id of a source with a target. Both
stores hand their rows over in key order, in pages, so the join needs no
memory beyond a page or two of each: the ids up to the smaller of the two
buffers' last ids are final on both sides (every later id is larger), and
that window is joined by whole-array operations instead of one Python step
per id, the cost that bounds a 10M-row comparison.

A page is ``(ids, columns)``: an ascending array of unique ids and a tuple of
arrays of the same length (values carried along, e.g. checksums).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dmu_migrate.stores.base import id_array

Page = tuple[np.ndarray, tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class Window:
    """One window of both sides; ``left_only`` / ``right_only`` are boolean masks and
    ``left_both`` / ``right_both`` the positions of the shared ids, pairwise, ascending."""

    left: Page
    right: Page
    left_only: np.ndarray
    right_only: np.ndarray
    left_both: np.ndarray
    right_both: np.ndarray


class _Side:
    """The pages of one side not yet joined, filled from its stream as needed."""

    def __init__(self, pages: Iterable[Page], width: int) -> None:
        self.pages = iter(pages)
        self.width = width
        self.buffered: list[Page] = []
        self.rows = 0
        self.done = False

    def fill(self) -> None:
        while self.rows == 0 and not self.done:
            page = next(self.pages, None)
            if page is None:
                self.done = True
            elif len(page[0]):
                self.buffered.append(page)
                self.rows += len(page[0])

    @property
    def last(self) -> Any:
        return self.buffered[-1][0][-1]

    def take(self, bound: Any) -> Page:
        """Every buffered row with id <= ``bound`` (all of them when ``bound`` is None)."""
        if not self.buffered:
            return np.empty(0, dtype=object), tuple(np.empty(0, object) for _ in range(self.width))
        ids, columns = _concat(self.buffered)
        n = len(ids) if bound is None else int(np.searchsorted(ids, bound, side="right"))
        rest = (ids[n:], tuple(c[n:] for c in columns))
        self.buffered = [rest] if n < len(ids) else []
        self.rows = len(ids) - n
        return ids[:n], tuple(c[:n] for c in columns)


def _concat(pages: list[Page]) -> Page:
    if len(pages) == 1:
        return pages[0]
    width = len(pages[0][1])
    return (
        np.concatenate([p[0] for p in pages]),
        tuple(np.concatenate([p[1][i] for p in pages]) for i in range(width)),
    )


def windows(
    left: Iterable[Page], right: Iterable[Page], widths: tuple[int, int] = (0, 0)
) -> Iterator[Window]:
    """Join two ascending streams of pages; every id of either side is in exactly one window.

    ``widths`` are the sides' numbers of columns, for the empty page of a side that ended.
    """
    a, b = _Side(left, widths[0]), _Side(right, widths[1])
    while True:
        a.fill()
        b.fill()
        if not a.rows and not b.rows:
            return
        # Ids up to the smaller last id are final on both sides; once one side has
        # ended, the other's buffer is all its own (no bound).
        bound = min(a.last, b.last) if a.rows and b.rows else None
        wa, wb = a.take(bound), b.take(bound)
        _, ia, ib = np.intersect1d(wa[0], wb[0], assume_unique=True, return_indices=True)
        left_only = np.ones(len(wa[0]), bool)
        left_only[ia] = False
        right_only = np.ones(len(wb[0]), bool)
        right_only[ib] = False
        yield Window(wa, wb, left_only, right_only, ia, ib)


def pages_of(chunks: Iterable[np.ndarray]) -> Iterator[Page]:
    """Id arrays as pages without columns."""
    for chunk in chunks:
        yield (chunk if isinstance(chunk, np.ndarray) else id_array(list(chunk))), ()
