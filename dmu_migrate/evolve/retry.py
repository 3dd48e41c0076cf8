"""Retries of store work that failed for a passing reason, with exponential backoff.

A migration runs for hours against servers that restart, networks that drop
and rate limits that push back. Each store maps such failures into
StoreUnavailable where it calls its client; they are retried with jittered
exponential backoff, and anything else (a bad schema, a refused write) fails at
once. Work is retried from the ledger's cursor, so a retry repeats at most
one unacknowledged batch, which the idempotent upserts absorb.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from dmu_migrate.errors import StoreError, StoreUnavailable
from dmu_migrate.evolve.settings import RetryPolicy as RetryPolicy  # its defaults are settings
from dmu_migrate.stores.base import redact

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_transient(exc: BaseException | None) -> bool:
    """A passing failure: what a store mapped into StoreUnavailable (stores/client_errors.py)."""
    return isinstance(exc, StoreUnavailable)


class Retrier:
    def __init__(self, policy: RetryPolicy, seed: int | None = None) -> None:
        self.policy = policy
        self.retries = 0  # over the whole run, for the report
        self._rng = random.Random(seed)

    def run(self, what: str, step: Callable[[], T], progress: Callable[[], Any] | None = None) -> T:
        """Run ``step``; on a passing failure back off and run it again.

        ``progress`` tells whether the step got further before failing (the
        cursor moved); the retry budget then starts afresh, so a long pass over
        a flaky network is not cut short by failures hours apart.
        """
        attempt, started, mark = 0, time.monotonic(), progress() if progress else None
        while True:
            try:
                return step()
            except StoreUnavailable as exc:
                now = progress() if progress else None
                if progress is not None and now != mark:
                    attempt, started, mark = 0, time.monotonic(), now
                waited = time.monotonic() - started
                if attempt >= self.policy.max_retries or waited > self.policy.timeout:
                    raise StoreError(
                        f"{what} kept failing after {attempt} retries in {waited:.0f}s "
                        f"({redact(_brief(exc))}); the ledger is intact: run evolve again to "
                        f"resume, or raise --max-retries/--timeout"
                    ) from exc
                delay = min(self.policy.max_delay, self.policy.base_delay * 2**attempt)
                delay *= self._rng.uniform(0.5, 1.0)  # jitter: many workers must not retry in step
                log.warning(
                    "%s failed (%s); retry %d in %.1fs",
                    what,
                    redact(_brief(exc)),
                    attempt + 1,
                    delay,
                )
                time.sleep(delay)
                attempt += 1
                self.retries += 1


def _brief(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
