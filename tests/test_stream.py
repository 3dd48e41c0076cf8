"""evolve/stream.py: background stages keep order, surface errors where they happened,
bound how far they read ahead, and stop when closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from dmu_migrate.evolve.stream import Stage


class Counting:
    """A source that records how far it has been read and whether it was closed."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.produced = 0
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[int]:
        try:
            for i in range(self.n):
                if i == self.fail_at:
                    raise ConnectionError(f"lost at {i}")
                self.produced += 1
                yield i
        finally:
            self.closed.set()


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_items_arrive_in_order(depth: int) -> None:
    with Stage(Counting(500), depth, "t") as stage:
        assert list(stage) == list(range(500))


@pytest.mark.parametrize("depth", [0, 2])
def test_an_error_surfaces_after_the_items_before_it(depth: int) -> None:
    got = []
    with Stage(Counting(10, fail_at=6), depth, "t") as stage, pytest.raises(ConnectionError):
        for item in stage:
            got.append(item)
    assert got == [0, 1, 2, 3, 4, 5]


def test_read_ahead_is_bounded() -> None:
    source = Counting(1000)
    with Stage(source, 2, "t") as stage:
        items = iter(stage)
        next(items)
        time.sleep(0.3)  # ample time to run ahead if it could
        # one taken, two queued, one waiting to be put
        assert source.produced <= 1 + 2 + 1


def test_close_stops_the_producer_and_closes_its_source() -> None:
    source = Counting(10**9)
    stage = Stage(source, 2, "t")
    next(iter(stage))
    stage.close()
    assert source.closed.wait(2.0)
    produced = source.produced
    time.sleep(0.2)
    assert source.produced == produced


def test_the_producer_runs_while_the_consumer_works() -> None:
    """Overlap, shown without timing: item 0 is in hand while items 1-2 are being read."""
    source = Counting(100)
    with Stage(source, 2, "t") as stage:
        items = iter(stage)
        assert next(items) == 0
        deadline = time.monotonic() + 5
        while source.produced < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.produced >= 3
        assert list(items) == list(range(1, 100))
