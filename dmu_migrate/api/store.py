"""The store a verb works on: opened from a URI and credentials, closed on the way out."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from dmu_migrate.errors import DmuError

if TYPE_CHECKING:
    from dmu_migrate.stores.base import VectorStore

# Called once a store is open. Client libraries (pymilvus) install their log
# handlers when first imported, which is inside open_store; the command line
# registers its log policy here so that it applies to them. Empty for library users.
AFTER_OPEN: list[Callable[[], None]] = []


def resolve_token(uri: str, token: str | None) -> str | None:
    """``token``, else DMU_TOKEN, else the store's own MILVUS_TOKEN or QDRANT_API_KEY.

    The order of the command line's --token, so a script and a cron line given
    the same environment open the store with the same credentials.
    """
    from dmu_migrate.stores.base import store_token

    return store_token(uri, token or os.environ.get("DMU_TOKEN") or None)


@contextmanager
def opened(uri: str, token: str | None) -> Iterator[VectorStore]:
    """The store at ``uri``, with the credentials of ``resolve_token``.

    A store client's own exception (connection lost, disk full, permission) in
    the body leaves as StoreError (or AccessDenied), so that a script catches
    the same tree the command line maps to exit codes; anything else is a bug
    and keeps its traceback.
    """
    from dmu_migrate.stores.base import open_store

    with _client_errors():
        store = open_store(uri, resolve_token(uri, token))
    for hook in AFTER_OPEN:
        hook()
    try:
        with _client_errors():
            yield store
    finally:
        store.close()


def resolve_target_token(uri: str, token: str | None) -> str | None:
    """``token``, else DMU_TARGET_TOKEN, else the target store's own MILVUS_TOKEN or
    QDRANT_API_KEY; never DMU_TOKEN, which holds the source store's credentials."""
    from dmu_migrate.stores.base import store_token

    return store_token(uri, token or os.environ.get("DMU_TARGET_TOKEN") or None)


def crosses(uri: str, target_uri: str | None) -> bool:
    """Whether a run writes into another store than it reads (evolve --target-uri); the
    source's own store, spelled another way, is no other store."""
    from dmu_migrate.stores.base import store_place

    if not target_uri:
        return False
    return store_place(target_uri) != store_place(uri)


@contextmanager
def opened_for(
    uri: str,
    token: str | None,
    collection: str,
    target_uri: str | None,
    target_token: str | None,
    filter: str | None = None,
) -> Iterator[VectorStore]:
    """The store a migration of ``collection`` runs on: the one at ``uri``, or, given
    another ``target_uri``, a StorePair that reads the collection there and writes the
    evolved collection, ledger and alias into the target (stores/pair.py), with the
    run's ``filter`` carried into the target's language."""
    with opened(uri, token) as source:
        if target_uri is None or not crosses(uri, target_uri):
            yield source
            return
        from dmu_migrate.stores.pair import paired

        credentials = resolve_target_token(target_uri, target_token)
        with _client_errors(), paired(source, target_uri, credentials, collection, filter) as pair:
            yield pair


@contextmanager
def _client_errors() -> Iterator[None]:
    from dmu_migrate.evolve.retry import client_error

    try:
        yield
    except DmuError:
        raise
    except Exception as exc:
        mapped = client_error(exc, "the store call")
        if mapped is None:
            raise
        raise mapped from exc
