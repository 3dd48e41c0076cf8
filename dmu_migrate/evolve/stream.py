"""Bounded background stages: a store's reads, the adapter and the writes overlap.

Reading a page waits on the store's network and server, the adapter runs in
onnxruntime, and both release the GIL, so a thread per stage keeps all three
busy. Each stage hands items on through a queue of ``depth`` slots, which
bounds memory to a few batches whatever the collection's size, and keeps
their order: the single writer downstream sees batches exactly as read, so
the ledger's cursor stays a true resume point.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_DONE = object()
_POLL = 0.1  # seconds between checks for a consumer that stopped listening


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Stage(Generic[T]):
    """Iterate ``source`` in a background thread, at most ``depth`` items ahead.

    An exception in the source is raised to the consumer at the point it
    would have been seen inline. ``close()`` stops the thread (between items)
    and is safe to call at any time; use the stage as a context manager.
    With ``depth`` 0 the source is iterated inline, with no thread.
    """

    def __init__(self, source: Iterable[T], depth: int, name: str) -> None:
        self._source = source
        self._depth = depth
        self._stop = threading.Event()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(depth, 1))
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        iterator = iter(self._source)
        try:
            for item in iterator:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, who decides
            self._put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # a generator must be closed by the thread running it
                close()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        if self._thread is None:
            yield from self._source
            return
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]  # everything else came from the source

    def close(self) -> None:
        """Stop reading ahead. A put waiting on a full queue gives up within _POLL; a read
        already sent to the store finishes in the background and is dropped, never waited on.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * _POLL)

    def __enter__(self) -> Stage[T]:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
