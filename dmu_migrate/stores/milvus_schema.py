"""A Milvus collection's definition, read and reproduced: fields, indexes, settings.

``create_like`` makes the target of a new-collection migration: the source's
fields (the evolved vector resized), the tag fields, its functions (BM25 and
the like: Milvus fills their output fields from the input), its named
partitions, and every index with its type, metric and build parameters.
Either the whole definition is in place or the target is dropped again and
the error names what failed: a target without its index would accept every
row and then fail on the first read.

Index parameters come back from ``describe_index`` in two shapes: servers
list build parameters beside ``index_type`` (``{'M': '24', 'efConstruction':
'144', 'index_type': 'HNSW', ...}``), Milvus Lite nests them under
``params``. Lite also keeps only the nested form at creation (it drops flat
keys and builds with its defaults), while servers take the flat one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from pymilvus import DataType, Function, MilvusClient, MilvusException

from dmu_migrate.errors import StoreError
from dmu_migrate.stores.base import (
    RESERVED_NAMES,
    TAG_FIELDS,
    TAG_FIX,
    TAG_ORIGIN,
    CollectionInfo,
    ForeignSchema,
)
from dmu_migrate.stores.milvus_columns import literal

log = logging.getLogger(__name__)

TIMEOUT = 120.0  # seconds per client call: a stalled server fails the step, never hangs it
TAG_MAX_LENGTH = 64
# Field attributes a target must repeat, besides name, type and params.
_FIELD_FLAGS = ("is_primary", "auto_id", "is_partition_key", "nullable", "description")
# describe_index keys that describe the index rather than configure its build.
_INDEX_META = {
    "index_type",
    "metric_type",
    "field_name",
    "index_name",
    "total_rows",
    "indexed_rows",
    "pending_index_rows",
    "state",
    "params",
}


def one_line(text: object) -> str:
    """Server messages can span lines (a parser's caret diagram); errors are one line."""
    return " ".join(str(text).split())


@dataclass(frozen=True)
class IndexSpec:
    field: str
    name: str
    index_type: str
    metric: str | None  # None for scalar indexes
    params: dict[str, Any]

    def same_build(self, other: IndexSpec) -> bool:
        """Equal type, metric and parameters; values compared as text (servers return text)."""

        def text(params: dict[str, Any]) -> dict[str, str]:
            return {k: str(v) for k, v in params.items()}

        return (self.index_type, self.metric, text(self.params)) == (
            other.index_type,
            other.metric,
            text(other.params),
        )

    def describe(self) -> str:
        metric = f" {self.metric}" if self.metric else ""
        return f"{self.index_type}{metric} {json.dumps(self.params, sort_keys=True)}"


def parse_index(raw: dict[str, Any]) -> IndexSpec:
    """One ``describe_index`` answer, in either shape, as an IndexSpec."""
    nested = raw.get("params")
    if isinstance(nested, str):  # some versions return the nested form still encoded
        try:
            nested = json.loads(nested)
        except json.JSONDecodeError:
            nested = None
    params = dict(nested) if isinstance(nested, dict) else {}
    params.update({k: v for k, v in raw.items() if k not in _INDEX_META})
    metric = raw.get("metric_type")
    return IndexSpec(
        field=str(raw.get("field_name", "")),
        name=str(raw.get("index_name", raw.get("field_name", ""))),
        index_type=str(raw.get("index_type", "")),
        metric=str(metric) if metric and metric != "NONE" else None,
        params=params,
    )


def read_indexes(client: MilvusClient, collection: str) -> list[IndexSpec]:
    """Every index of a collection (vector and scalar), in the order Milvus lists them."""
    specs = []
    for name in client.list_indexes(collection, timeout=TIMEOUT):
        raw = client.describe_index(collection, name, timeout=TIMEOUT)
        if raw:
            specs.append(parse_index(dict(raw)))
    return specs


def unindexed_vectors(desc: dict[str, Any], specs: list[IndexSpec], vector_types: Any) -> list[str]:
    indexed = {s.field for s in specs}
    return [
        f["name"] for f in desc["fields"] if f["type"] in vector_types and f["name"] not in indexed
    ]


def index_params(client: MilvusClient, specs: list[IndexSpec], nested: bool) -> Any:
    """The IndexParams that rebuild ``specs``; ``nested`` for Milvus Lite (see the docstring)."""
    out = client.prepare_index_params()
    for spec in specs:
        extra: dict[str, Any] = {}
        if spec.metric:
            extra["metric_type"] = spec.metric
        if spec.params:
            extra["params"] = {"params": spec.params} if nested else dict(spec.params)
        out.add_index(
            field_name=spec.field, index_type=spec.index_type, index_name=spec.name, **extra
        )
    return out


def default_value(field: dict[str, Any]) -> Any:
    """A field's default as a Python value (describe returns the protobuf ValueField)."""
    raw = field.get("default_value")
    if raw is None or not hasattr(raw, "WhichOneof"):
        return raw
    kind = raw.WhichOneof("data")
    return None if kind is None else getattr(raw, kind)


def build_schema(desc: dict[str, Any], vector_field: str, new_dim: int) -> Any:
    """The source's schema with ``vector_field`` resized and the tag fields added."""
    schema = MilvusClient.create_schema(
        auto_id=bool(desc.get("auto_id", False)),
        enable_dynamic_field=bool(desc.get("enable_dynamic_field", False)),
        description=desc.get("description", ""),
    )
    for f in desc["fields"]:
        params = dict(f.get("params") or {})
        if f["name"] == vector_field:
            params["dim"] = new_dim
        if "element_type" in f:  # ARRAY fields carry it beside their params
            params["element_type"] = f["element_type"]
        flags = {k: f[k] for k in _FIELD_FLAGS if f.get(k)}
        if default_value(f) is not None:
            flags["default_value"] = default_value(f)
        schema.add_field(f["name"], f["type"], **flags, **params)
    for function in desc.get("functions") or []:
        schema.add_function(
            Function(
                name=function["name"],
                function_type=function["type"],
                # describe returns protobuf containers; Function takes plain lists and dicts
                input_field_names=list(function["input_field_names"]),
                output_field_names=list(function["output_field_names"]),
                description=function.get("description", ""),
                params=dict(function.get("params") or {}),
            )
        )
    present = {f["name"] for f in desc["fields"]}
    for tag in RESERVED_NAMES:  # with TAG_SOURCE, the checksum that re-runs compare
        if tag not in present:
            schema.add_field(tag, DataType.VARCHAR, max_length=TAG_MAX_LENGTH)
    return schema


def key_partitions(desc: dict[str, Any], lite: bool) -> int | None:
    """How many partitions the collection's partition key hashes into; ``lite``: ``desc``
    comes from Milvus Lite, which counts its "_default" partition in what it reports."""
    if not any(f.get("is_partition_key") for f in desc["fields"]) or not desc.get("num_partitions"):
        return None
    return int(desc["num_partitions"]) - (1 if lite else 0)


def create_options(desc: dict[str, Any], lite: bool) -> dict[str, Any]:
    """Collection settings beside the schema: shards, partitions, consistency, properties;
    ``lite``: ``desc`` comes from Milvus Lite."""
    options: dict[str, Any] = {}
    # The source's shard (DML channel) count: writes into one channel serialise on a
    # cluster, so a source laid out for parallel writes keeps that layout.
    if desc.get("num_shards"):
        options["num_shards"] = desc["num_shards"]
    if key_partitions(desc, lite):
        options["num_partitions"] = key_partitions(desc, lite)
    if desc.get("consistency_level_name"):
        options["consistency_level"] = desc["consistency_level_name"]
    if desc.get("properties"):
        options["properties"] = dict(desc["properties"])
    return options


def definition(
    desc: dict[str, Any], skip: str, drop_tags: bool = False, lite: bool = False
) -> dict[str, Any]:
    """What must be equal between source and target, except field ``skip`` (the evolved
    vector, resized) and, with ``drop_tags``, the tag fields; ``lite``: ``desc`` comes from
    Milvus Lite."""
    fields = {}
    for f in desc["fields"]:
        if f["name"] == skip or (drop_tags and f["name"] in RESERVED_NAMES):
            continue
        params = {k: str(v) for k, v in (f.get("params") or {}).items()}
        flags = {k: bool(f.get(k)) for k in _FIELD_FLAGS if k != "description"}
        text = (f.get("description", ""), str(default_value(f)))
        fields[f["name"]] = (str(f["type"]), params, flags, text)
    keys = ("auto_id", "enable_dynamic_field", "description")
    out: dict[str, Any] = {k: desc.get(k) for k in keys}
    out["num_partitions"] = key_partitions(desc, lite) or desc.get("num_partitions")
    out["consistency_level"] = desc.get("consistency_level_name")
    out["properties"] = {k: str(v) for k, v in (desc.get("properties") or {}).items()}
    out["fields"] = fields
    out["functions"] = sorted(_function_text(f) for f in desc.get("functions") or [])
    return out


def _function_text(function: Any) -> str:
    """A function's definition as comparable text (name, type, inputs, outputs, params)."""
    if not isinstance(function, dict):  # some clients describe functions as objects
        function = {k: getattr(function, k, None) for k in ("name", "type", "params")}
    keys = ("name", "type", "input_field_names", "output_field_names", "params", "description")
    return json.dumps(
        {k: str(list(v) if k.endswith("_names") else v) for k in keys if (v := function.get(k))},
        sort_keys=True,
    )


def function_outputs(desc: dict[str, Any]) -> set[str]:
    """Fields Milvus computes from other fields: a write must leave them out."""
    return {f["name"] for f in desc["fields"] if f.get("is_function_output")}


def first_difference(want: dict[str, Any], got: dict[str, Any]) -> str | None:
    for key, value in want.items():
        if key == "fields":
            for name, spec in value.items():
                if got["fields"].get(name) != spec:
                    return f"field '{name}' ({got['fields'].get(name)} instead of {spec})"
        elif got.get(key) != value:
            return f"{key} ({got.get(key)!r} instead of {value!r})"
    return None


def lost_nullable(source_desc: dict[str, Any], target_desc: dict[str, Any]) -> str | None:
    """A field nullable in the source but not in the target, which then refuses every
    batch holding a null (measured on 2.3.5: a server before 2.5 takes nullable=True
    and makes the field non-nullable without a word); None when every one is kept."""
    made = {f["name"]: f for f in target_desc["fields"]}
    for f in source_desc["fields"]:
        if f.get("nullable") and f["name"] in made and not made[f["name"]].get("nullable"):
            return str(f["name"])
    return None


def create_with_indexes(
    client: MilvusClient,
    source_desc: dict[str, Any],
    target: str,
    create: dict[str, Any],
    specs: list[IndexSpec],
    skip: str,
    partitions: tuple[str, ...] | list[str] = (),
    lite: tuple[bool, bool] = (False, False),
) -> None:
    """``create_collection(target, **create)`` with ``specs`` and the named ``partitions``,
    checked against the source's description ``source_desc`` (all but field ``skip``, the
    resized vector); dropped again on failure. ``lite``: whether the source and the target
    are Milvus Lite."""
    source = source_desc["collection_name"]
    try:
        client.create_collection(
            target,
            # Milvus Lite keeps nested build parameters only.
            index_params=index_params(client, specs, nested=lite[1]) if specs else None,
            timeout=TIMEOUT,
            **create,
        )
        for partition in partitions:
            client.create_partition(target, partition, timeout=TIMEOUT)
        described = client.describe_collection(target, timeout=TIMEOUT)
        nullable = lost_nullable(source_desc, described)
        if nullable is not None:
            raise StoreError(
                f"field '{nullable}' of '{source}' is nullable, but this Milvus made it a field "
                f"that cannot hold null in '{target}' (nullable fields need Milvus 2.5 or "
                f"later), so '{target}' was dropped again and nothing was written; evolve into "
                f"Milvus 2.5 or later, or into a copy of '{source}' with '{nullable}' filled "
                f"and not nullable"
            )
        wanted = definition(source_desc, skip, True, lite[0])
        made = definition(described, skip, True, lite[1])
        level = wanted["consistency_level"]
        if lite[1] and level not in (None, "Strong"):
            # Reads in a Lite file see every write before them: Strong is all it has.
            log.info("Milvus Lite reads '%s' at Strong consistency, not %s", target, level)
            wanted["consistency_level"] = "Strong"
        differs = first_difference(wanted, made)
        if differs:
            # A 2.3 server, for one, takes a schema with a BM25 function and drops the function.
            raise StoreError(
                f"this Milvus created collection '{target}' with another {differs} than "
                f"'{source}' has, so '{target}' was dropped again (nothing was written); "
                f"evolve into a Milvus version that keeps it"
            )
        built = {s.field: s for s in read_indexes(client, target)}
        for spec in specs:
            have = built.get(spec.field)
            if have is None or not have.same_build(spec):
                index = have.describe() if have else "no index"
                raise StoreError(
                    f"collection '{target}' got {index} on field '{spec.field}' where '{source}' "
                    f"has {spec.describe()}; this Milvus cannot reproduce the source's index, "
                    f"so '{target}' was dropped again (nothing was written)"
                )
    except MilvusException as exc:
        _drop_quietly(client, target)
        raise StoreError(
            f"cannot create collection '{target}' like '{source}' ({one_line(exc.message)}); "
            f"'{target}' was dropped again, nothing was written"
        ) from exc
    except StoreError:
        _drop_quietly(client, target)
        raise


def _drop_quietly(client: MilvusClient, name: str) -> None:
    """Remove a half-created target; the error that led here is the one to report."""
    try:
        if client.has_collection(name, timeout=TIMEOUT):
            client.drop_collection(name, timeout=TIMEOUT)
    except MilvusException as exc:
        log.warning("could not drop half-created collection %s: %s", name, one_line(exc))


def source_problem(
    client: MilvusClient, name: str, allowed: dict[str, list[str] | None], server: bool
) -> str | None:
    """See VectorStore.source_problem; ``name`` must be loaded."""
    desc = client.describe_collection(name, timeout=TIMEOUT)
    if server and (desc.get("auto_id") or any(f.get("auto_id") for f in desc["fields"])):
        # Measured on 2.3.5: an upsert that gives ids to an auto_id collection is refused
        # ("the number of fields is less than needed"), and a target without auto_id
        # would refuse the application's inserts after cut-over instead.
        return (
            "has an auto_id primary key, and a Milvus server does not take the source's ids "
            "into an auto_id collection, so the evolved copy cannot keep both; evolve it on "
            "a copy without auto_id, or on Milvus Lite"
        )
    fields = {f["name"]: f for f in desc["fields"]}
    declared = [t for t in RESERVED_NAMES if t in fields]
    for tag in declared:
        kind = fields[tag]["type"]
        if kind != DataType.VARCHAR:
            return f"has its own field '{tag}' ({getattr(kind, 'name', kind)}), {TAG_FIX}"
    if declared and not all(t in fields for t in TAG_FIELDS):
        # Evolve declares the version tags together (and the checksum with them, in any
        # collection it made since it keeps one): a reserved field without them is the user's.
        return f"has its own field '{declared[0]}', {TAG_FIX}"
    dynamic = bool(desc.get("enable_dynamic_field"))
    for tag, values in allowed.items():
        if not (tag in fields or dynamic):
            continue
        if values is None:
            if tag in fields or TAG_ORIGIN in fields:
                continue  # declared beside the origin tag: written with it, never alone
            # A dynamic key written without the origin evolve writes beside it is the user's.
            expr = f"(exists {tag}) and not (exists {TAG_ORIGIN})"
        else:
            expr = f"{tag} not in [{', '.join(literal(v) for v in values)}]"
            if tag not in fields:  # a dynamic key: a row without it matches "not in" on servers
                expr = f"(exists {tag}) and ({expr})"
        rows = client.query(
            name,
            filter=expr,
            output_fields=[tag],
            limit=1,
            consistency_level="Strong",
            timeout=TIMEOUT,
        )
        if rows:
            return f"has its own values in field '{tag}' (e.g. {rows[0].get(tag)!r}), {TAG_FIX}"
    return None


def _foreign(source: CollectionInfo) -> ForeignSchema:
    assert isinstance(source.schema, ForeignSchema)  # the callers checked
    return source.schema


def create_foreign(client: MilvusClient, source: CollectionInfo, target: str, new_dim: int) -> None:
    """A target for a source in another store kind (stores/crossing.py): its key, the
    evolved vector with an AUTOINDEX of the source's metric, the tags, and a dynamic
    field for every other field or payload key; dropped again on failure."""
    spec = _foreign(source)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    if spec.string_ids:
        schema.add_field(
            source.pk_field, DataType.VARCHAR, is_primary=True, max_length=spec.key_length
        )
    else:
        schema.add_field(source.pk_field, DataType.INT64, is_primary=True)
    schema.add_field(source.vector_field, DataType.FLOAT_VECTOR, dim=new_dim)
    for tag in RESERVED_NAMES:
        schema.add_field(tag, DataType.VARCHAR, max_length=TAG_MAX_LENGTH)
    index = client.prepare_index_params()
    index.add_index(
        field_name=source.vector_field, index_type="AUTOINDEX", metric_type=source.metric
    )
    try:
        client.create_collection(target, schema=schema, index_params=index, timeout=TIMEOUT)
    except MilvusException as exc:
        _drop_quietly(client, target)
        raise StoreError(
            f"cannot create collection '{target}' for '{source.name}' of another store "
            f"({one_line(exc.message)}); '{target}' was dropped again, nothing was written"
        ) from exc


def foreign_problem(desc: dict[str, Any], source: CollectionInfo, new_dim: int) -> str | None:
    """Why an existing collection cannot take rows of a source in another store kind."""
    spec = _foreign(source)
    fields = {f["name"]: f for f in desc["fields"]}
    pk = fields.get(source.pk_field)
    key_type = DataType.VARCHAR if spec.string_ids else DataType.INT64
    if pk is None or not pk.get("is_primary") or pk["type"] != key_type:
        return f"its primary key is not a {key_type.name} field '{source.pk_field}'"
    vector = fields.get(source.vector_field)
    if vector is None or int((vector.get("params") or {}).get("dim", -1)) != new_dim:
        return f"its field '{source.vector_field}' is not a {new_dim}-d float vector"
    missing = [t for t in RESERVED_NAMES if t not in fields]
    if missing:
        return f"it has no tag fields {missing}"
    if not desc.get("enable_dynamic_field"):
        return "it has no dynamic field for the source's other fields"
    return None
