"""A wall-clock limit on a test's body: a stalled store call fails the test, never hangs the run.

The limit covers the test function only, not its fixtures: the session's Milvus server
may wait its turn behind another run (tests/conftest.py) for longer than any test takes.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def limit(seconds: int) -> Callable[[F], F]:
    def wrap(test: F) -> F:
        @functools.wraps(test)  # keeps the signature pytest reads fixtures from
        def limited(*args: Any, **kwargs: Any) -> Any:
            def expire(signum: int, frame: Any) -> None:
                raise TimeoutError(f"{test.__name__} ran past its {seconds} s limit")

            previous = signal.signal(signal.SIGALRM, expire)
            signal.alarm(seconds)
            try:
                return test(*args, **kwargs)
            finally:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, previous)

        return limited  # type: ignore[return-value]

    return wrap
