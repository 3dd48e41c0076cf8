"""Backfill ranks (plan-backfill --tag) on Milvus: one field of existing rows, by id.

Milvus upsert overwrites whole rows, so the only write that leaves every other
field as it is, even when the application writes the row meanwhile, is a partial
update (``upsert(partial_update=True)``, Milvus >= 2.6.2 and Milvus Lite) of
``{pk, dmu_backfill_rank}`` alone. Older servers are refused before any write:
reading each row and writing it back whole could undo a concurrent write.

The rank lives in a declared field (nullable INT64, so that a rank can be cleared)
or, without one, in the collection's dynamic field. Collections with named
partitions are refused: an upsert outside a row's own partition adds a second
row there (stores/milvus_partitions.py). A partial update of an id with no row
would insert one; the ids are looked up first, and Milvus itself refuses the
insert of a row without its vector should one be deleted in between.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

from dmu_migrate.stores.base import RANK_FIELD
from dmu_migrate.stores.milvus_columns import in_list
from dmu_migrate.stores.milvus_partitions import named
from dmu_migrate.stores.milvus_schema import TIMEOUT

PARTIAL_UPDATE = (2, 6, 2)  # the first Milvus server with upsert(partial_update=True)
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_CHUNK = 1000  # ids per lookup: keeps the filter expression within server limits
FIX = (
    f"add a nullable INT64 field '{RANK_FIELD}' to it (client.add_collection_field, "
    f"Milvus >= 2.5) or read the ranks from plan-backfill --output instead"
)


def server_version(client: MilvusClient) -> tuple[int, ...] | None:
    text = str(client.get_server_version(timeout=TIMEOUT))
    match = _VERSION.search(text)
    return tuple(int(g or 0) for g in match.groups()) if match else None


def problem(client: MilvusClient, name: str, server: bool) -> str | None:
    """Why ``name`` cannot take ranks (the rest of a sentence), or None."""
    if server:
        version = server_version(client)
        if version is None or version < PARTIAL_UPDATE:
            shown = ".".join(map(str, version)) if version else "unknown"
            return (
                f"is on a Milvus server (version {shown}) without partial update, so its "
                f"rows cannot get '{RANK_FIELD}' without rewriting them whole; upgrade to "
                f"Milvus >= 2.6.2 or read the ranks from plan-backfill --output instead"
            )
    desc = client.describe_collection(name, timeout=TIMEOUT)
    field = next((f for f in desc["fields"] if f["name"] == RANK_FIELD), None)
    if field is not None:
        if field["type"] != DataType.INT64 or not field.get("nullable"):
            kind = getattr(field["type"], "name", field["type"])
            nullable = "nullable " if field.get("nullable") else ""
            return (
                f"has field '{RANK_FIELD}' as {nullable}{kind}, which cannot hold ranks that a "
                f"new plan clears; make it a nullable INT64 field (copy the collection) or read "
                f"the ranks from plan-backfill --output instead"
            )
    elif not desc.get("enable_dynamic_field"):
        return f"has no field '{RANK_FIELD}' and no dynamic field to hold it; {FIX}"
    partitions = named(client, name)
    if partitions:
        return (
            f"has named partitions ({', '.join(partitions[:3])}), where a partial update "
            f"outside a row's own partition would add a second row; read the ranks from "
            f"plan-backfill --output instead"
        )
    return None


def present(client: MilvusClient, name: str, pk: str, ids: list[Any]) -> list[Any]:
    """The ids of ``ids`` that are rows of ``name``, in the order given."""
    found: set[Any] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows = client.query(
            name,
            filter=in_list(pk, chunk),
            output_fields=[pk],
            consistency_level="Strong",
            timeout=TIMEOUT,
        )
        found.update(r[pk] for r in rows)
    return [i for i in ids if i in found]


def write(
    client: MilvusClient, name: str, pk: str, ids: np.ndarray, ranks: np.ndarray | None
) -> int:
    """Partial update of RANK_FIELD alone on the rows of ``ids`` that exist; their count."""
    wanted = ids.tolist()
    rank_of = dict(zip(wanted, ranks.tolist(), strict=True)) if ranks is not None else {}
    rows = [{pk: i, RANK_FIELD: rank_of.get(i)} for i in present(client, name, pk, wanted)]
    if rows:
        client.upsert(name, rows, partial_update=True, timeout=TIMEOUT)
    return len(rows)


def rank_filter() -> str:
    return f"{RANK_FIELD} >= 1"  # a cleared rank is null (or absent): no comparison holds
