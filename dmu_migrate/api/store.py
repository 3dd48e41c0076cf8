"""The store a verb works on: opened from a URI and credentials, closed on the way out."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

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
    """The store at ``uri``, with the credentials of ``resolve_token``."""
    from dmu_migrate.stores.base import open_store

    store = open_store(uri, resolve_token(uri, token))
    for hook in AFTER_OPEN:
        hook()
    try:
        yield store
    finally:
        store.close()
