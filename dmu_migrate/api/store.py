"""The store a verb works on: opened from a URI and credentials, closed on the way out."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dmu_migrate.stores.base import VectorStore, store_token
from dmu_migrate.stores.opener import crosses as crosses  # where the verbs import it from
from dmu_migrate.stores.opener import open_run

# Called once a store is open. Client libraries (pymilvus) install their log
# handlers when first imported, which is inside open_store; the command line
# registers its log policy here so that it applies to them. Empty for library users.
AFTER_OPEN: list[Callable[[], None]] = []


def resolve_token(uri: str, token: str | None) -> str | None:
    """``token``, else DMU_TOKEN, else the store's own MILVUS_TOKEN or QDRANT_API_KEY.

    The order of the command line's --token, so a script and a cron line given
    the same environment open the store with the same credentials.
    """
    return store_token(uri, token or os.environ.get("DMU_TOKEN") or None)


def resolve_target_token(uri: str, token: str | None) -> str | None:
    """``token``, else DMU_TARGET_TOKEN, else the target store's own MILVUS_TOKEN or
    QDRANT_API_KEY; never DMU_TOKEN, which holds the source store's credentials."""
    return store_token(uri, token or os.environ.get("DMU_TARGET_TOKEN") or None)


@contextmanager
def opened(uri: str, token: str | None) -> Iterator[VectorStore]:
    """The store at ``uri``, with the credentials of ``resolve_token``."""
    with opened_for(uri, token, "", None, None) as store:
        yield store


@contextmanager
def opened_for(
    uri: str,
    token: str | None,
    collection: str,
    target_uri: str | None,
    target_token: str | None,
    filter: str | None = None,
) -> Iterator[VectorStore]:
    """The store a migration of ``collection`` runs on (stores/opener.py's open_run), with
    the credentials of ``resolve_token`` and ``resolve_target_token``.

    The stores map their clients' exceptions (connection lost, disk full, permission)
    into StoreError (or AccessDenied) themselves (stores/client_errors.py), so that a
    script catches the same tree the command line maps to exit codes; anything else
    is a bug and keeps its traceback.
    """
    credentials = resolve_target_token(target_uri, target_token) if target_uri else None
    token = resolve_token(uri, token)
    with open_run(uri, token, collection, target_uri, credentials, filter) as store:
        for hook in AFTER_OPEN:
            hook()
        yield store
