"""Exception tree of dmu-migrate.

Every error a user can cause is a ``DmuError`` whose message is one line that
names the object, what is wrong and the fix. The CLI prints that line and exits
with the class's ``exit_code``; anything else is a bug and keeps its traceback.

    DmuError                 exit 1
    +-- NothingToDo          exit 0  a state the operator chose (rolled back, pruned): not a failure
    +-- InputError           exit 2  bad flags, tables or files given by the user
    +-- ArtifactError        exit 3  missing, corrupt or inconsistent upgrade artifact
    +-- StoreError           exit 4  vector store unreachable, missing collection, bad schema
    |   +-- StoreUnavailable exit 4  a passing failure: unreachable, timed out, rate-limited, busy
    |   +-- AccessDenied     exit 4  the store rejected the credentials or lacks a privilege
    |   +-- LeaseHeld        exit 4  another live run holds the migration's (or shard's) lease
    |       +-- LeaseLost    exit 4  another run took the lease while this one held it
    +-- VerificationError    exit 5  written data does not match what was expected
    +-- QualityGateError     exit 6  the upgrade was validated as worse than not upgrading

Each store maps its client library's exceptions into this tree where it calls the
client, once (stores/client_errors.py; the store modules say which of their client's
errors pass): a denial becomes AccessDenied, a passing failure (a connection lost, a
timeout, a rate limit, a busy server) StoreUnavailable, any other client or disk
failure StoreError. ``evolve.retry`` reads only these classes: it retries
StoreUnavailable with backoff, and once retries run out raises a StoreError (exit 4)
that says to run again: the ledger makes the next run resume.
"""

from __future__ import annotations


class DmuError(Exception):
    """Base of every error that is the user's to fix."""

    exit_code = 1


class NothingToDo(DmuError):
    """The command has nothing to do because of an operator's decision; cron must not fail."""

    exit_code = 0


class InputError(DmuError):
    exit_code = 2


class ArtifactError(DmuError):
    exit_code = 3


class StoreError(DmuError):
    exit_code = 4


class StoreUnavailable(StoreError):
    """A passing failure of the store (unreachable, a timeout, a rate limit, busy): retried
    with backoff by evolve/retry.py before it reaches the user."""


class AccessDenied(StoreError):
    """Credentials rejected or a privilege missing: never retried, fixed by the operator."""


class LeaseHeld(StoreError):
    """Another live run holds the lease: the work is that run's, not a store failure.

    Kept apart from other store errors so that a caller that may leave the work to
    the holder (the last shard finishing a split) never mistakes a slow or failing
    store for a rival run.
    """


class LeaseLost(LeaseHeld):
    """Another run took the lease while this one held it (a take-over, or a rival's slow
    write landing after this run's read-back): this run stops and never writes the
    record again, so the holder's record stays whole."""


class VerificationError(DmuError):
    exit_code = 5


class QualityGateError(DmuError):
    exit_code = 6


def check_range(flag: str, value: float, low: float, high: float, why: str = "") -> None:
    """A number outside its range: one line naming the option, the range and the value."""
    if not low <= value <= high:
        raise InputError(
            f"{flag} must be between {low:g} and {high:g}, got {value:g}"
            + (f" ({why})" if why else "")
        )
