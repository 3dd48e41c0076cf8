"""A store client's exceptions mapped into the error tree of errors.py, at the store.

Each store module says which exceptions its client raises and which of them pass
(``Client``); ``store_boundary`` wraps every public method of its store class, and
``maps_errors`` a module's functions that take a raw client, so that such an exception
leaves as AccessDenied (a denial, stores/access.py), StoreUnavailable (a passing
failure, which evolve/retry.py retries) or StoreError (any other failure of the client
or the disk), each one line naming the store and the call. Anything else is a bug and
keeps its traceback. The retry loop and the command line then read only the classes.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from dmu_migrate.errors import AccessDenied, DmuError, StoreError, StoreUnavailable
from dmu_migrate.stores.access import access_error, denial
from dmu_migrate.stores.base import redact

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# Passing failures whatever the client: the network or the disk said "not now".
_PASSING = (ConnectionError, TimeoutError)
# gRPC status names that mean "try again later" (both server clients speak gRPC).
_GRPC_PASSING = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}


@dataclass(frozen=True)
class Client:
    """What a store knows about its client library's exceptions."""

    name: str  # "Milvus", "Qdrant", "Parquet": how messages name the store
    raises: tuple[type[BaseException], ...]  # the client's (and the disk's) exception classes
    passing: Callable[[BaseException], bool] = lambda exc: False  # the client's own verdict


def brief(exc: BaseException) -> str:
    """An exception's text on one line, at most 200 characters, credentials masked."""
    return redact(" ".join(str(exc).split())[:200] or type(exc).__name__)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = 0
    while exc is not None and seen < 10:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1


def passes(exc: BaseException, client: Client) -> bool:
    """Whether ``exc``, or an error it was raised from, is a passing failure; never a denial,
    which can wear a "cannot connect" code (pymilvus) but never passes by waiting."""
    if denial(exc) is not None:
        return False
    for one in _chain(exc):
        if isinstance(one, _PASSING) or client.passing(one):
            return True
        code = getattr(one, "code", None)
        status = code() if callable(code) else code  # grpc.RpcError.code() is a method
        if getattr(status, "name", None) in _GRPC_PASSING:
            return True
    return False


def store_error(exc: BaseException, client: Client, where: str, what: str) -> StoreError | None:
    """``exc`` as the error tree has it; None when it stays as it is.

    A raw client exception becomes AccessDenied, StoreUnavailable or StoreError. A store's
    own one-line error raised from a client exception (a refused filter, a schema the
    server would not create) stands, unless a denial or a passing failure lies under it:
    that decides how it ends (never retried, or retried), whatever the store called it.
    Anything not raised from the client's exceptions is a bug, or already mapped.
    """
    if isinstance(exc, StoreUnavailable | AccessDenied):
        return None
    root = next(
        (e for e in _chain(exc) if isinstance(e, client.raises) and not isinstance(e, DmuError)),
        None,
    )
    if root is None:
        return None
    store = f"{client.name} at '{redact(where)}'" if where else client.name
    denied = access_error(exc, store, what)
    if denied is not None:
        return denied
    if passes(exc, client):
        if isinstance(exc, DmuError):  # the store's own line ("cannot open ...; check --uri")
            return StoreUnavailable(str(exc))
        return StoreUnavailable(f"{store}: {what} failed for now: {brief(root)}")
    if isinstance(exc, DmuError):
        return None
    return StoreError(
        f"{store}: {what} failed: {brief(exc)}; fix the store (space, permissions, "
        f"collection) and run again, the ledger resumes from the last acknowledged batch"
    )


@contextmanager
def mapped(client: Client, where: str, what: str) -> Iterator[None]:
    """The body's client exceptions as the error tree has them (see store_error)."""
    try:
        yield
    except Exception as exc:
        error = store_error(exc, client, where, what)
        if error is None:
            raise
        raise error from exc


def _where(args: tuple[Any, ...]) -> str:
    """The store a call went to: its ``uri``, from the store itself or the client's owner."""
    return str(getattr(args[0], "uri", "")) if args else ""


def _iterate(items: Iterator[T], client: Client, where: str, step: str) -> Iterator[T]:
    with mapped(client, where, step):
        yield from items


def maps_errors(client: Client, what: str | None = None) -> Callable[[F], F]:
    """A function (or method) whose client exceptions leave mapped; generators too."""

    def wrap(fn: F) -> F:
        step = what or fn.__name__.strip("_").replace("_", " ")
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen(*args: Any, **kwargs: Any) -> Any:
                with mapped(client, _where(args), step):
                    yield from fn(*args, **kwargs)

            return gen  # type: ignore[return-value]

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            with mapped(client, _where(args), step):
                result = fn(*args, **kwargs)
            if inspect.isgenerator(result):  # a helper's generator, read after the call
                return _iterate(result, client, _where(args), step)
            return result

        return call  # type: ignore[return-value]

    return wrap


def store_boundary(client: Client) -> Callable[[type[T]], type[T]]:
    """A store class whose every public method maps its client's exceptions (maps_errors):
    the one place a store turns them into the error tree."""

    def decorate(cls: type[T]) -> type[T]:
        for name, value in list(vars(cls).items()):
            if name.startswith("_"):
                continue
            if inspect.isfunction(value):
                setattr(cls, name, maps_errors(client)(value))
            elif isinstance(value, classmethod):  # connect: opening the store
                setattr(cls, name, classmethod(maps_errors(client, "opening")(value.__func__)))
        return cls

    return decorate
