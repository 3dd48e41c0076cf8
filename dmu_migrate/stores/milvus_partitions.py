"""Named Milvus partitions: which partition each row lives in, and keeping it there.

Milvus query results carry no partition name, so a read learns it by asking
each named partition which of the page's ids it holds (an id that none holds
is in ``_default``). The answer travels in ``Batch.fields[PARTITION_KEY]``,
and a write groups rows by it and upserts each group into its partition.

Collections with only ``_default``, or with a partition key field (Milvus
routes each row by its key and refuses a partition name), skip all of this:
their reads cost nothing extra.

Measured on the 2.3.5 server and on Milvus Lite 3.2 (once the row is
flushed): an upsert into another partition than the one a row lives in adds
a second row instead of moving it, and a delete scoped to a partition deletes
the id everywhere on Lite. So a row that changed partition is deleted, the
target flushed, and the row written again (evolve/sync.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pymilvus import MilvusClient

from dmu_migrate.stores.client_errors import maps_errors
from dmu_migrate.stores.milvus_columns import in_list, literal
from dmu_migrate.stores.milvus_errors import MILVUS

DEFAULT = "_default"
STRONG = "Strong"
TIMEOUT = 120.0  # seconds per client call, as in milvus_schema
_WINDOW = 16384  # a server's largest query result (offset + limit)
_CHUNK = 1000  # ids per "in [...]" filter: keeps the expression within server limits


@maps_errors(MILVUS, "listing partitions")
def named(client: MilvusClient, name: str) -> list[str]:
    """The partitions besides ``_default`` whose rows a copy must place; [] with a partition key."""
    desc = client.describe_collection(name, timeout=TIMEOUT)
    if any(f.get("is_partition_key") for f in desc["fields"]):
        return []
    return [p for p in client.list_partitions(name, timeout=TIMEOUT) if p != DEFAULT]


def locate(
    client: MilvusClient,
    name: str,
    pk: str,
    ids: np.ndarray,
    partitions: list[str],
    expr: str = "",
    contiguous: bool = False,
) -> list[str]:
    """The partition of each id. ``contiguous`` says the ids are one page of a key-ordered
    read under ``expr``: then one range query per partition finds them."""
    wanted = ids.tolist()
    where: dict[Any, str] = {}
    for partition in partitions:
        if len(where) == len(wanted):
            break  # every id placed: the partitions left hold none of them
        left = [i for i in wanted if i not in where]
        for found in _held(client, name, pk, partition, left, expr, contiguous):
            where.setdefault(found, partition)
    return [where.get(i, DEFAULT) for i in wanted]


def _held(
    client: MilvusClient,
    name: str,
    pk: str,
    partition: str,
    ids: list[Any],
    expr: str,
    contiguous: bool,
) -> list[Any]:
    """Which of ``ids`` partition ``partition`` holds."""
    if contiguous and ids:
        span = f"{pk} >= {literal(min(ids))} and {pk} <= {literal(max(ids))}"
        where = " and ".join(f"({e})" for e in (expr, span) if e)
        rows = _query(client, name, partition, where, pk, _WINDOW)
        if len(rows) < _WINDOW:  # the whole range came back, so nothing was cut off
            return rows
    out: list[Any] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        out.extend(_query(client, name, partition, in_list(pk, chunk), pk, len(chunk)))
    return out


def _query(
    client: MilvusClient, name: str, partition: str, expr: str, pk: str, limit: int
) -> list[Any]:
    rows = client.query(
        name,
        filter=expr,
        output_fields=[pk],
        partition_names=[partition],
        limit=limit,
        consistency_level=STRONG,
        timeout=TIMEOUT,
    )
    return [r[pk] for r in rows]


def groups(partitions: list[str]) -> dict[str, list[int]]:
    """Row positions per partition, in first-seen order."""
    out: dict[str, list[int]] = {}
    for row, partition in enumerate(partitions):
        out.setdefault(partition, []).append(row)
    return out


def ensure(client: MilvusClient, name: str, wanted: set[str], known: set[str]) -> None:
    """Create the partitions of ``wanted`` that collection ``name`` lacks; ``known`` caches
    the ones seen, so a write asks Milvus only when a partition is new to it."""
    if wanted <= known:
        return
    known.update(client.list_partitions(name, timeout=TIMEOUT))
    for partition in sorted(wanted - known):
        # A partition created in the source after the first run arrives here on a re-run.
        client.create_partition(name, partition, timeout=TIMEOUT)
        known.add(partition)
