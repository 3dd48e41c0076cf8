"""A source collection as another store kind holds it: names, keys, fields, refusals.

``evolve --target-uri`` writes the evolved copy of a collection into another
store (stores/pair.py). The target store's own create_like, write_rows and
reads then see the source through this mapping:

    what                 Milvus               Qdrant                    Parquet
    key                  INT64 / VARCHAR pk   point id: unsigned int    pk column
                         (named as in the     or UUID ("id")            (named as in
                         source, else "id")                             the source, else "id")
    evolved vector       FLOAT_VECTOR field   named vector, the         fixed-size list column
                         (unnamed -> vector)  source field's name       (unnamed -> vector)
    metric               COSINE / IP / L2     Cosine / Dot / Euclid     as the source's
    other fields         dynamic field keys   payload keys              columns
    null (Qdrant)        absent key           null                      null
    tags                 VARCHAR fields       payload keys              string columns

What a target kind cannot hold is refused before anything is written, with
the field and the fix: vectors besides the evolved one (sparse, binary,
named), Milvus functions, partition keys and named partitions, Qdrant
multi-vectors and Manhattan distance, and keys the target cannot take (a
Qdrant id is an unsigned integer or a UUID; a Milvus INT64 stops at 2^63 - 1).
Keys are checked on the first page of ids at plan time and on every batch as
it is written, since a source keeps taking inserts.

Between two stores of one kind nothing is mapped (``same``): the target holds
the source in its own layout, as an evolve within the source's store would.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import numpy as np

from dmu_migrate.errors import InputError
from dmu_migrate.stores.base import (
    NULL_KEYS,
    PARTITION_KEY,
    Batch,
    CollectionInfo,
    ForeignSchema,
    store_kind,
)

DEFAULT_VECTOR = "vector"  # an unnamed Qdrant vector's field name where fields are named
MAX_INT64 = 2**63 - 1
MAX_POINT_ID = 2**64 - 1  # Qdrant's unsigned 64-bit point ids
UUID_LENGTH = 36
STRING_KEY_LENGTH = 512  # Milvus VARCHAR key length for string keys that are not UUIDs
NAMES = {"milvus": "Milvus", "qdrant": "Qdrant", "parquet": "Parquet"}
FIX = "evolve a copy without it, or evolve within its own store (no --target-uri)"


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


class Crossing:
    """How a source described by one store kind appears to a target of another kind."""

    def __init__(self, source: CollectionInfo, source_uri: str, target_uri: str) -> None:
        self.source = source
        self.source_kind = store_kind(source_uri)
        self.target_kind = store_kind(target_uri)
        self.target_name = NAMES[self.target_kind]
        # Qdrant names its key "id"; Milvus and Parquet keep the source's name.
        keep_pk = self.target_kind != "qdrant" and self.source_kind != "qdrant"
        self.pk = source.pk_field if keep_pk and source.pk_field else "id"
        unnamed = source.vector_field == "" and self.target_kind != "qdrant"
        self.vector_name = DEFAULT_VECTOR if unnamed else source.vector_field
        # The source's declared fields (Milvus): a None there is a null, not an absent key.
        schema = source.schema if isinstance(source.schema, dict) else {}
        self.declared = {f["name"] for f in schema.get("fields", []) if isinstance(f, dict)}
        self.string_ids = False
        # Two stores of one kind: the target holds the source as its own store would.
        self.same = self.source_kind == self.target_kind

    # -- refusals -------------------------------------------------------------
    def problem(self, first_ids: np.ndarray, partitions: list[str]) -> str | None:
        """What the target kind cannot hold, as the rest of "collection 'x' ..."; None: nothing.

        ``first_ids``: the source's first page of keys; ``partitions``: its named
        Milvus partitions (none elsewhere).
        """
        self.string_ids = first_ids.dtype == object
        if self.same:
            return None  # the target's create_like refuses what its version cannot build
        found = self._schema_problem(partitions)
        if found:
            return found
        bad = self.key_problem(first_ids)
        return f"has {bad}" if bad else None

    def _schema_problem(self, partitions: list[str]) -> str | None:
        info, target = self.source, self.target_name
        evolved = info.vector_field
        others = [v for v in info.vector_fields if v != evolved]
        if self.source_kind == "milvus":
            desc = info.schema or {}
            for f in desc.get("fields", []):
                kind = getattr(f["type"], "name", str(f["type"]))
                if kind.endswith("VECTOR") and f["name"] != evolved:
                    return (
                        f"has vector field '{f['name']}' ({kind}) besides the evolved "
                        f"'{evolved}', and evolve carries only the evolved vector into {target}; "
                        f"{FIX}"
                    )
                if f.get("is_partition_key"):
                    return (
                        f"routes rows by partition key field '{f['name']}', which {target} has "
                        f"no counterpart for; {FIX}"
                    )
            for function in desc.get("functions") or []:
                name = function.get("name") if isinstance(function, dict) else function
                return f"computes fields with function '{name}', which {target} cannot; {FIX}"
            if desc.get("struct_array_fields"):
                return f"has struct array fields, which {target} cannot hold; {FIX}"
            if partitions:
                return (
                    f"places rows in named partitions {partitions}, which {target} has no "
                    f"counterpart for; {FIX}"
                )
        if self.source_kind == "qdrant":
            params = info.schema
            sparse = sorted(getattr(params, "sparse_vectors", None) or {})
            if sparse:
                return (
                    f"has sparse vectors {sparse} beside the evolved one, and evolve carries only "
                    f"the evolved vector into {target}; {FIX}"
                )
            vectors = getattr(params, "vectors", None)
            chosen = vectors if not isinstance(vectors, dict) else vectors.get(evolved)
            if getattr(chosen, "multivector_config", None) is not None:
                return f"holds multi-vectors in '{evolved}', which {target} cannot; {FIX}"
            distance = str(getattr(getattr(chosen, "distance", None), "value", ""))
            if distance == "Manhattan":
                return f"scores '{evolved}' by Manhattan distance, which {target} lacks; {FIX}"
        if others:
            label = ", ".join(repr(v or "(unnamed)") for v in others)
            return (
                f"has vectors {label} besides the evolved '{evolved or '(unnamed)'}', and evolve "
                f"carries only the evolved vector into {target}; {FIX}"
            )
        return None

    def key_problem(self, ids: np.ndarray) -> str | None:
        """The first key of ``ids`` the target cannot take, described; None: all fit."""
        values = ids.tolist()
        if self.target_kind == "qdrant":
            for value in values:
                if isinstance(value, str) and not _is_uuid(value):
                    return (
                        f"key {value!r}, but Qdrant point ids are unsigned integers or UUIDs "
                        f"(lowercase, with hyphens); give the rows such keys in a copy and evolve "
                        f"that, or evolve into Milvus or Parquet"
                    )
                if isinstance(value, int) and not 0 <= value <= MAX_POINT_ID:
                    return (
                        f"key {value}, but Qdrant point ids are unsigned 64-bit integers or "
                        f"UUIDs; evolve into Milvus or Parquet"
                    )
        if self.target_kind == "milvus":
            for value in values:
                if isinstance(value, int) and value > MAX_INT64:
                    return (
                        f"key {value}, past Milvus's INT64 primary key (at most 2^63 - 1); "
                        f"evolve into Qdrant or Parquet"
                    )
                if isinstance(value, str) and len(value.encode()) > self.key_length:
                    return (
                        f"key {value[:40]!r}... of {len(value.encode())} bytes, longer than the "
                        f"{self.key_length} a Milvus key of this target holds; shorten the keys"
                    )
        return None

    @property
    def key_length(self) -> int:
        return UUID_LENGTH if self.source_kind == "qdrant" else STRING_KEY_LENGTH

    # -- the target's view ----------------------------------------------------------
    def vector(self, name: str) -> str:
        """The target's name of a source vector field."""
        return self.vector_name if name == self.source.vector_field else name

    def view(self, info: CollectionInfo) -> CollectionInfo:
        """``info`` (the source, or the target seen with the source's layout) in target terms."""
        if self.same:
            return info
        return replace(
            info,
            pk_field=self.pk,
            vector_field=self.vector(info.vector_field),
            vector_fields={self.vector(k): d for k, d in info.vector_fields.items()},
            schema=ForeignSchema(self.source_kind, self.string_ids, self.key_length),
        )

    def batch(self, batch: Batch) -> Batch:
        """Source rows as the target writes them; InputError for a key or field it cannot take."""
        if self.same:
            return batch
        bad = self.key_problem(batch.ids)
        if bad:
            raise InputError(f"collection '{self.source.name}' has {bad}")
        fields = {k: v for k, v in batch.fields.items() if k not in (PARTITION_KEY, NULL_KEYS)}
        if self.target_kind == "milvus":
            # Everything but the key, the vector and the tags lives in the dynamic field.
            clash = sorted({self.pk, self.vector_name, "$meta"} & set(fields))
            if clash:
                raise InputError(
                    f"collection '{self.source.name}' has payload key '{clash[0]}', the name of "
                    f"the Milvus target's primary key or vector field; rename that key in a copy "
                    f"and evolve the copy"
                )
        if self.target_kind == "qdrant" and self.declared:
            # A Milvus null (nullable field) stays null in the payload, not absent.
            nulls = [
                tuple(k for k in self.declared if k in fields and fields[k][i] is None)
                for i in range(len(batch))
            ]
            if any(nulls):
                fields[NULL_KEYS] = nulls
        return Batch(batch.ids, batch.vectors, fields)
