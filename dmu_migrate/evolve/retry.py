"""Retries of store work that failed for a passing reason, with exponential backoff.

A migration runs for hours against servers that restart, networks that drop
and rate limits that push back. Such failures are retried with jittered
exponential backoff; anything else (a bad schema, a refused write) fails at
once. Work is retried from the ledger's cursor, so a retry repeats at most
one unacknowledged batch, which the idempotent upserts absorb.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from dmu_migrate.errors import StoreError
from dmu_migrate.evolve.settings import RetryPolicy as RetryPolicy  # its defaults are settings
from dmu_migrate.stores.access import access_error, denial
from dmu_migrate.stores.base import redact

log = logging.getLogger(__name__)
T = TypeVar("T")

# gRPC status names that mean "try again later" (both clients can surface grpc errors).
_GRPC_TRANSIENT = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}


def is_transient(exc: BaseException | None) -> bool:
    """True when this error, or one it was raised from, is a passing failure."""
    if denial(exc) is not None:
        # A refused login wears pymilvus's "cannot connect" code 2; waiting never fixes it.
        return False
    seen = 0
    while exc is not None and seen < 10:
        if _transient_one(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _transient_one(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    code = getattr(exc, "code", None)
    status = code() if callable(code) else code  # grpc.RpcError.code() is a method
    if getattr(status, "name", None) in _GRPC_TRANSIENT:
        return True
    return _client_transient(exc)


def _client_transient(exc: BaseException) -> bool:
    """A client's own errors are judged by the store module that uses that client; the
    error's package names it, so a Qdrant run never imports pymilvus to ask."""
    package = type(exc).__module__.partition(".")[0]
    if package == "pymilvus":
        from dmu_migrate.stores import milvus

        return milvus.transient(exc)
    if package == "qdrant_client":
        from dmu_migrate.stores import qdrant

        return qdrant.transient(exc)
    return False


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
            except Exception as exc:
                if not is_transient(exc):
                    mapped = client_error(exc, what)
                    if mapped is not None:
                        raise mapped from exc
                    raise
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


# Exceptions of these packages come from a store's client or the disk under it: the
# store boundary, reported as one StoreError line. Anything else is a bug and keeps its
# traceback.
_CLIENT_MODULES = ("pymilvus", "milvus_lite", "qdrant_client", "grpc", "httpx", "pyarrow")


def client_error(exc: BaseException, what: str) -> StoreError | None:
    """A store client's (or the disk's) failure as one line naming the step; None for bugs."""
    denied = access_error(exc, "the store", what)
    if denied is not None:
        return denied
    module = type(exc).__module__ or ""
    if isinstance(exc, OSError) or module.split(".")[0] in _CLIENT_MODULES:
        return StoreError(
            f"{what} failed: {redact(_brief(exc))}; fix the store (space, permissions, "
            f"collection) and run again, the ledger resumes from the last acknowledged batch"
        )
    return None


def _brief(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
