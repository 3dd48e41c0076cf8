"""A Milvus collection's definition, read and reproduced: fields, indexes, settings.

``create_like`` makes the target of a new-collection migration: the source's
fields (the evolved vector resized), the tag fields, and every index with its
type, metric and build parameters. Either the whole definition is in place
or the target is dropped again and the error names what failed: a target
without its index would accept every row and then fail on the first read.

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

from pymilvus import MilvusClient, MilvusException

from dmu_migrate.errors import StoreError

log = logging.getLogger(__name__)

TIMEOUT = 120.0  # seconds per client call: a stalled server fails the step, never hangs it
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


def create_with_indexes(
    client: MilvusClient,
    source: str,
    target: str,
    create: dict[str, Any],
    specs: list[IndexSpec],
    nested: bool,
) -> None:
    """``create_collection(target, **create)`` with ``specs``, checked; dropped again on failure."""
    try:
        client.create_collection(
            target,
            index_params=index_params(client, specs, nested) if specs else None,
            timeout=TIMEOUT,
            **create,
        )
        built = {s.field: s for s in read_indexes(client, target)}
        for spec in specs:
            have = built.get(spec.field)
            if have is None or not have.same_build(spec):
                got = have.describe() if have else "no index"
                raise StoreError(
                    f"collection '{target}' got {got} on field '{spec.field}' where '{source}' "
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
