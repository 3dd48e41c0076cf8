"""Qdrant backend (servers over gRPC, and local mode on a directory) over ``QdrantClient``.

Conventions that map Qdrant onto the store protocol:

- The primary key is reported as ``"id"``; ids are unsigned ints or UUID strings.
- An unnamed (single) vector is the vector field ``""``; named vectors go by name.
- Filters are Qdrant filter JSON (``models.Filter``), e.g.
  ``{"must": [{"key": "label", "match": {"value": 3}}]}``.
- Payload keys become ``Batch.fields``. A point's OTHER named vectors (those not
  being read as ``Batch.vectors``) travel in ``Batch.fields`` under
  ``VECTOR_KEY_PREFIX + name`` as float32 arrays (None where the point lacks one),
  so that ``write_rows`` preserves them; payload keys and vector names live in
  separate namespaces in Qdrant, hence a prefix rather than the bare name.
- A payload column holds None both where a point lacks the key and where its
  value is JSON null; the keys whose value is null travel per point in
  ``Batch.fields[NULL_KEYS]``, so that null stays null and absent stays absent
  (Qdrant's ``is_null`` and ``is_empty`` filters tell them apart).
- Cosine collections store unit-normalised vectors (Qdrant normalises on write).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from dmu_migrate.errors import InputError, StoreError, StoreUnavailable
from dmu_migrate.stores import access, qdrant_schema
from dmu_migrate.stores.base import (
    LEDGER_COLLECTION,
    NULL_KEYS,
    RANK_FIELD,
    SEARCH_EF,
    TAG_FIELDS,
    TAG_FIX,
    TAG_ORIGIN,
    VECTOR_KEY_PREFIX,
    Batch,
    CollectionInfo,
    Hits,
    Id,
    VectorStore,
    choose_vector_field,
    id_array,
    redact,
)
from dmu_migrate.stores.client_errors import Client, passes, store_boundary
from dmu_migrate.stores.qdrant_filter import parse_filter

log = logging.getLogger(__name__)

_TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}  # statuses that mean "try again later"


def transient(exc: BaseException) -> bool:
    """Whether a qdrant-client error is a passing failure: no answer, or a try-again status."""
    if isinstance(exc, ResponseHandlingException):  # the request never got an answer
        return True
    return isinstance(exc, UnexpectedResponse) and exc.status_code in _TRANSIENT_HTTP


# The client's HTTP and gRPC errors, and the disk's under local mode.
QDRANT = Client(
    "Qdrant", (UnexpectedResponse, ResponseHandlingException, grpc.RpcError, OSError), transient
)


_METRICS = {"Cosine": "COSINE", "Dot": "IP", "Euclid": "L2"}
_DISTANCES = {v: k for k, v in _METRICS.items()}
_LEDGER_NS = uuid.UUID("5b0f3c1e-6d3a-4f4e-9a55-0d6d6b1f7a10")  # ledger point ids: uuid5(key)


def _searched(m: int | None, ef: int, exact: bool, rescored: bool) -> str:
    """How a server search ran, in words: the graph's build and the ef it searched with."""
    said = "exact (no HNSW graph)" if exact else f"HNSW m={m} hnsw_ef={ef}"
    return said + (", quantized scores rescored" if rescored else "")


def _plain(value: Any) -> Any:
    """Payload values as JSON-able Python (rows may come from another store as numpy)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _past(point_id: Any, until: Any) -> bool:
    """Whether a point id comes after ``until`` in scroll order (integers before UUIDs)."""
    if isinstance(point_id, int) != isinstance(until, int):
        return isinstance(point_id, str)  # a UUID is past any integer, never the reverse
    return bool(point_id > until)


def _ids_array(name: str, ids: list[Any]) -> np.ndarray:
    kinds = {isinstance(i, int) for i in ids}
    if len(kinds) > 1:
        # Scroll puts every integer id before every UUID, but one key column cannot
        # hold both in an order the merge-join of catch-up and verification can follow.
        raise StoreError(
            f"collection '{name}' mixes integer and UUID point ids; dmu-migrate needs one "
            f"kind per collection (give the integer points UUIDs, or split the collection)"
        )
    return id_array(ids)


# Its methods map their client calls in _errors; this maps any call made outside one.
@store_boundary(QDRANT)
class QdrantStore:
    def __init__(self, client: QdrantClient, uri: str, local: bool) -> None:
        self.client = client
        self.uri = redact(uri)  # for messages; the client holds the real one
        self.local = local
        self.shared = not local  # local mode locks its directory to one process
        self.closed = False
        # Where create_like reads the source collection's setup: this store, or another
        # Qdrant (evolve --target-uri, read_setup_from).
        self._origin = self

    @classmethod
    def connect(cls, uri: str, token: str | None = None) -> QdrantStore:
        """``qdrant://host:6333`` (gRPC on 6334, or ``?grpc_port=N``), ``qdrants://`` for TLS,
        ``qdrant:path/to/dir`` for local mode."""
        if uri.startswith(("qdrant://", "qdrants://")):
            parts = urlsplit(uri)
            if not parts.hostname:
                raise InputError(f"Qdrant URI '{uri}' names no host; use qdrant://host:6333")
            port = parts.port or 6333
            grpc_port = int(parse_qs(parts.query).get("grpc_port", [port + 1])[0])
            try:
                client = QdrantClient(
                    host=parts.hostname,
                    port=port,
                    grpc_port=grpc_port,
                    prefer_grpc=True,
                    https=uri.startswith("qdrants://"),
                    api_key=token or None,
                    # Its version probe runs in a thread and only warns; get_collections
                    # below turns an unreachable server into a StoreError instead.
                    check_compatibility=False,
                )
            except Exception as exc:  # bad ports/keys surface as several client types
                raise StoreError(
                    f"cannot open Qdrant at '{redact(uri)}' ({redact(str(exc))}); check --uri"
                ) from exc
            store = cls(client, uri, local=False)
            with store._errors("connect", "check --uri, --token and that the server is up"):
                client.get_collections()  # the client is lazy: fail here, not mid-migration
            return store
        path = uri.removeprefix("qdrant:")
        if not path:
            raise InputError(f"Qdrant URI '{uri}' names no directory; use qdrant:path/to/dir")
        try:
            client = QdrantClient(path=path)
        except RuntimeError as exc:  # local mode holds a lock on the directory
            raise StoreError(
                f"Qdrant directory '{path}' is open in another process; close it or use a server"
            ) from exc
        return cls(client, uri, local=True)

    def close(self) -> None:
        if not self.closed:
            self.client.close()  # releases the local-mode directory lock
            self.closed = True

    @contextmanager
    def _errors(self, what: str, fix: str) -> Iterator[None]:
        """Client failures as one-line errors naming the object and the fix: the one place
        this store maps its client's exceptions (a passing one is StoreUnavailable)."""
        try:
            yield
        except (InputError, StoreError):
            raise
        except Exception as exc:  # grpc, http and local-mode errors share no base class
            # A wrong or read-only API key (a server only; local mode has no keys).
            denied = access.access_error(exc, f"Qdrant at '{self.uri}'", what)
            if denied is not None:
                raise denied from exc
            detail = getattr(exc, "details", None)
            text = detail() if callable(detail) else str(exc)
            text = redact(" ".join(str(text).split())[:300])
            kind = StoreUnavailable if passes(exc, QDRANT) else StoreError
            raise kind(f"Qdrant at '{self.uri}' failed to {what} ({text}); {fix}") from exc

    # -- discovery ---------------------------------------------------------------
    def _aliases(self) -> dict[str, str]:
        with self._errors("list aliases", "check --uri"):
            found = self.client.get_aliases().aliases
        return {a.alias_name: a.collection_name for a in found}

    def has_collection(self, name: str) -> bool:
        with self._errors(f"look up collection '{name}'", "check --uri"):
            return bool(self.client.collection_exists(name)) or name in self._aliases()

    def _require(self, name: str) -> str:
        """The concrete collection behind a name or alias; StoreError when there is none."""
        concrete = self._aliases().get(name, name)
        with self._errors(f"look up collection '{name}'", "check --uri"):
            if self.client.collection_exists(concrete):
                return concrete
            present = sorted(c.name for c in self.client.get_collections().collections)
        raise StoreError(
            f"collection '{name}' does not exist in '{self.uri}'; check --collection "
            f"(present: {', '.join(present) or 'none'})"
        )

    def _vector_params(self, name: str) -> tuple[Any, dict[str, models.VectorParams]]:
        with self._errors(f"describe collection '{name}'", "check --collection"):
            params = self.client.get_collection(name).config.params
        vectors = params.vectors
        if isinstance(vectors, models.VectorParams):
            return params, {"": vectors}
        return params, dict(vectors or {})

    def describe(self, name: str, vector_field: str | None = None) -> CollectionInfo:
        concrete = self._require(name)
        params, vectors = self._vector_params(concrete)
        vector_field = choose_vector_field(
            name, {k: v.size for k, v in vectors.items()}, vector_field
        )
        chosen = vectors[vector_field]
        return CollectionInfo(
            requested=name,
            name=concrete,
            alias=name if concrete != name else None,
            pk_field="id",
            vector_field=vector_field,
            dim=int(chosen.size),
            metric=_METRICS.get(str(models.Distance(chosen.distance).value), "COSINE"),
            count=self.count(concrete),
            vector_fields={k: int(v.size) for k, v in vectors.items()},
            schema=params,
        )

    def count(self, name: str, filter: str | None = None) -> int:
        parsed = parse_filter(filter)
        with self._errors(f"count collection '{name}'", "check --collection and --filter"):
            return int(self.client.count(name, count_filter=parsed, exact=True).count)

    # -- reading -------------------------------------------------------------------
    def _pages(
        self,
        name: str,
        limit: int,
        filter: str | None,
        after: Any = None,
        full: bool = True,
        until: Any = None,
    ) -> Iterator[list[Any]]:
        """Non-empty pages of points with ``after`` < id <= ``until``, in id order (scroll's).

        Qdrant filters cannot compare ids, so the upper bound is applied here: scroll
        is in id order, so the first point past it ends the walk.
        """
        parsed = parse_filter(filter)
        # scroll's offset is inclusive: start AT the cursor and drop that point.
        offset = after.item() if isinstance(after, np.generic) else after  # a Batch's ids[-1]
        skip = offset
        while True:
            with self._errors(f"read collection '{name}'", "check --collection and --filter"):
                records, offset = self.client.scroll(
                    name,
                    scroll_filter=parsed,
                    limit=limit + (1 if skip is not None else 0),
                    offset=offset,
                    with_payload=full,
                    with_vectors=full,
                )
            if skip is not None:
                records = [r for r in records if str(r.id) != str(skip)]
                skip = None
            if until is not None:
                kept = [r for r in records if not _past(r.id, until)]
                offset = offset if len(kept) == len(records) else None
                records = kept
            if records:
                yield records
            if offset is None:
                return

    def iter_batches(
        self,
        info: CollectionInfo,
        batch_size: int,
        after: Id | None = None,
        filter: str | None = None,
        vector_field: str | None = None,
        until: Id | None = None,
    ) -> Iterator[Batch]:
        field = info.vector_field if vector_field is None else vector_field
        bound = until.item() if isinstance(until, np.generic) else until
        for records in self._pages(info.name, batch_size, filter, after, until=bound):
            yield self._to_batch(info.name, records, field)

    def iter_ids(
        self, name: str, batch_size: int, filter: str | None = None
    ) -> Iterator[np.ndarray]:
        for records in self._pages(name, batch_size, filter, full=False):
            yield _ids_array(name, [r.id for r in records])

    def _to_batch(self, name: str, records: list[Any], field: str) -> Batch:
        vectors: list[Any] = []
        others: dict[str, list[Any]] = {}
        payload_keys: dict[str, None] = {}
        for r in records:
            payload_keys.update(dict.fromkeys(r.payload or {}))
        for i, r in enumerate(records):
            named = r.vector if isinstance(r.vector, dict) else {"": r.vector}
            if named.get(field) is None:
                raise StoreError(
                    f"point {r.id} of collection '{name}' has no vector '{field}'; "
                    f"write it first or choose another --vector-field"
                )
            vectors.append(named[field])
            for vname, vec in named.items():
                if vname != field:
                    column = others.setdefault(VECTOR_KEY_PREFIX + vname, [None] * len(records))
                    # Sparse vectors stay SparseVector models: they are written back as read.
                    sparse = isinstance(vec, models.SparseVector)
                    column[i] = vec if sparse else np.asarray(vec, dtype=np.float32)
        fields: dict[str, list[Any]] = {
            k: [(r.payload or {}).get(k) for r in records] for k in payload_keys
        }
        nulls = [tuple(k for k, v in (r.payload or {}).items() if v is None) for r in records]
        if any(nulls):
            fields[NULL_KEYS] = nulls
        fields.update(others)
        return Batch(
            _ids_array(name, [r.id for r in records]),
            np.asarray(vectors, dtype=np.float32),
            fields,
        )

    def fetch(self, info: CollectionInfo, ids: np.ndarray, vector_field: str) -> Batch:
        wanted = ids.tolist()
        with self._errors(f"fetch points of collection '{info.name}'", "check --collection"):
            records = self.client.retrieve(
                info.name, ids=wanted, with_payload=True, with_vectors=True
            )
        by_id = {str(r.id): r for r in records}
        missing = [i for i in wanted if str(i) not in by_id]
        if missing:
            raise StoreError(
                f"collection '{info.name}' lacks ids {missing[:5]} ({len(missing)} missing); "
                f"re-run the migration to write them"
            )
        return self._to_batch(info.name, [by_id[str(i)] for i in wanted], vector_field)

    # -- writing -------------------------------------------------------------------
    def _target_vectors(self, source: CollectionInfo, new_dim: int) -> Any:
        """The source's vectors config with the evolved vector resized (distance kept)."""
        params = source.schema if isinstance(source.schema, models.CollectionParams) else None
        if params is not None and isinstance(params.vectors, models.VectorParams):
            old: dict[str, models.VectorParams] = {"": params.vectors}
        elif params is not None and params.vectors:
            old = dict(params.vectors)
        else:  # a source from another store kind: dims and metric only
            distance = models.Distance(_DISTANCES[source.metric])
            old = {
                k: models.VectorParams(size=d, distance=distance)
                for k, d in source.vector_fields.items()
            }
        new = {
            k: v.model_copy(update={"size": new_dim}) if k == source.vector_field else v
            for k, v in old.items()
        }
        return new[""] if list(new) == [""] else new

    def read_setup_from(self, source: VectorStore) -> None:
        if not isinstance(source, QdrantStore):
            raise InputError(f"'{source.uri}' is not a Qdrant store; no setup to read from it")
        self._origin = source

    def create_like(self, source: CollectionInfo, target: str, new_dim: int) -> None:
        if self.has_collection(target):
            raise StoreError(
                f"collection '{target}' already exists in '{self.uri}'; drop it or choose another target"
            )
        params = source.schema if isinstance(source.schema, models.CollectionParams) else None
        origin = self._origin
        # Local mode keeps no index or storage settings: none to read from it or give to it.
        local = self.local or origin.local
        extra: dict[str, Any] = {}
        indexes: dict[str, Any] = {}
        with origin._errors(f"describe collection '{source.name}'", "check --collection"):
            if params is not None:  # a Qdrant source: its whole setup, not only its vectors
                extra = qdrant_schema.create_options(origin.client, source.name, local)
                indexes = {} if local else qdrant_schema.payload_indexes(origin.client, source.name)
        with self._errors(f"create collection '{target}'", "check the server's logs and --uri"):
            self.client.create_collection(
                target, vectors_config=self._target_vectors(source, new_dim), **extra
            )
        try:
            with self._errors(f"index collection '{target}'", "check the server's logs"):
                if not self.local:  # local mode has no payload indexes (it warns and ignores them)
                    for key, schema in indexes.items():
                        self.client.create_payload_index(target, key, field_schema=schema)
                    for tag in TAG_FIELDS:
                        self.client.create_payload_index(
                            target, tag, field_schema=models.PayloadSchemaType.KEYWORD
                        )
                lacking = None
                if params is not None:
                    wanted = origin.client.get_collection(source.name)
                    lacking = qdrant_schema.difference(wanted, self.client, target, local)
            if lacking:
                raise StoreError(
                    f"Qdrant at '{self.uri}' created collection '{target}' with {lacking}, "
                    f"unlike '{source.name}', so it was dropped again (nothing was written); "
                    f"evolve on a Qdrant version that keeps it"
                )
        except StoreError:
            self.drop_collection(target)  # never leave a half-made target behind
            raise

    def target_problem(self, source: CollectionInfo, target: str, new_dim: int) -> str | None:
        if not self.has_collection(target):
            return f"collection '{target}' does not exist"
        _, vectors = self._vector_params(self._require(target))
        expected = self._target_vectors(source, new_dim)
        expected = {"": expected} if isinstance(expected, models.VectorParams) else expected
        for vname, params in expected.items():
            have = vectors.get(vname)
            label = "the unnamed vector" if vname == "" else f"vector '{vname}'"
            if have is None:
                return f"it has no {label}"
            if have.size != params.size or have.distance != params.distance:
                return (
                    f"its {label} is {have.size}-d {have.distance}, "
                    f"not {params.size}-d {params.distance}"
                )
        return None

    def add_vector_field(self, info: CollectionInfo, name: str, dim: int) -> None:
        _, vectors = self._vector_params(info.name)
        if name in vectors:
            if vectors[name].size == dim:
                return  # a resumed run: the field is already there
            raise StoreError(
                f"collection '{info.name}' already has a {vectors[name].size}-d vector '{name}'; "
                f"choose another --vector-field name"
            )
        config = models.DenseVectorNameConfig(
            dense=models.DenseVectorConfig(
                size=dim, distance=models.Distance(_DISTANCES[info.metric])
            )
        )
        with self._errors(
            f"add vector '{name}' to collection '{info.name}'",
            "a Qdrant server >= 1.18 is needed; otherwise evolve into a new collection",
        ):
            self.client.create_vector_name(info.name, name, config)

    def write_rows(
        self, source: CollectionInfo, target: str, batch: Batch, tags: dict[str, str]
    ) -> None:
        field = source.vector_field
        vectors = batch.vectors.astype(np.float32).tolist()
        named = {
            k.removeprefix(VECTOR_KEY_PREFIX): v
            for k, v in batch.fields.items()
            if k.startswith(VECTOR_KEY_PREFIX)
        }
        payload_cols = {
            k: v
            for k, v in batch.fields.items()
            if not k.startswith(VECTOR_KEY_PREFIX) and k != NULL_KEYS
        }
        nulls = batch.fields.get(NULL_KEYS) or [()] * len(batch)
        points = []
        for i, row_id in enumerate(batch.ids.tolist()):
            payload = {k: _plain(v[i]) for k, v in payload_cols.items() if v[i] is not None}
            payload.update(dict.fromkeys(nulls[i]))  # null stays null; absent stays absent
            payload.update(tags)
            vec: Any = vectors[i]
            if named or field != "":
                vec = {field: vectors[i]}
                vec.update({k: _plain(v[i]) for k, v in named.items() if v[i] is not None})
            points.append(models.PointStruct(id=row_id, vector=vec, payload=payload))
        # Upsert keyed by the source id: a batch written twice leaves one point.
        with self._errors(f"write points to collection '{target}'", "check --target"):
            self.client.upsert(target, points, wait=True)

    def write_vectors(
        self,
        info: CollectionInfo,
        field: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        tags: dict[str, str],
    ) -> None:
        wanted = ids.tolist()
        with self._errors(f"update points of collection '{info.name}'", "check --collection"):
            found = self.client.retrieve(info.name, ids=wanted, with_payload=False)
            present = {str(r.id) for r in found}
            missing = [i for i in wanted if str(i) not in present]  # as given: 7, not '7'
            if missing:
                raise StoreError(
                    f"collection '{info.name}' lacks ids {missing[:5]}; "
                    f"only existing points can get a new vector"
                )
            rows = vectors.astype(np.float32).tolist()
            # update_vectors and set_payload keep the point's other vectors and payload.
            points = [
                models.PointVectors(id=i, vector=v if field == "" else {field: v})
                for i, v in zip(wanted, rows, strict=True)
            ]
            self.client.update_vectors(info.name, points, wait=True)
            self.client.set_payload(info.name, payload=dict(tags), points=wanted, wait=True)

    def delete_ids(self, name: str, ids: np.ndarray) -> None:
        with self._errors(f"delete points of collection '{name}'", "check --collection"):
            self.client.delete(
                name, points_selector=models.PointIdsList(points=ids.tolist()), wait=True
            )

    def search(
        self, name: str, vector_field: str, queries: np.ndarray, k: int, widen: int = 1
    ) -> Hits:
        with self._errors(f"describe collection '{name}'", "check --collection"):
            config = self.client.get_collection(name).config
        _, vectors = self._vector_params(name)
        chosen = vectors[vector_field or ""]
        quantized = chosen.quantization_config or config.quantization_config
        own = chosen.hnsw_config  # a vector's own settings, each one over the collection's
        m = own.m if own and own.m is not None else config.hnsw_config.m
        # m = 0 builds no graph: the server scores every point, as local mode always does.
        exact = self.local or m == 0
        ef = max(k, SEARCH_EF) * widen
        search = models.SearchParams(
            hnsw_ef=ef,
            # Quantized scores are approximate: rank candidates again on the stored vectors.
            quantization=models.QuantizationSearchParams(rescore=True) if quantized else None,
        )
        requests = [
            models.QueryRequest(
                query=q.tolist(),
                using=vector_field or None,
                limit=k,
                params=None if self.local else search,  # local mode warns that it ignores them
            )
            for q in queries
        ]
        with self._errors(f"search collection '{name}'", "check --collection"):
            answers = self.client.query_batch_points(name, requests) if requests else []
        distance = str(models.Distance(chosen.distance).value)
        return Hits(
            [[_plain(h.id) for h in a.points] for a in answers],
            [[float(h.score) for h in a.points] for a in answers],
            {**_METRICS, "Manhattan": "L1"}.get(distance, "COSINE"),
            "exact (local mode)" if self.local else _searched(m, ef, exact, bool(quantized)),
            exact,
        )

    def tag_filter(self, tag: str, value: str) -> str:
        return json.dumps({"must": [{"key": tag, "match": {"value": value}}]})

    def source_problem(self, name: str, allowed: dict[str, list[str] | None]) -> str | None:
        for tag, values in allowed.items():
            present = models.IsEmptyCondition(is_empty=models.PayloadField(key=tag))
            if values is None:
                # A tag written alone, without the origin evolve writes beside it, is the user's.
                lone = models.IsEmptyCondition(is_empty=models.PayloadField(key=TAG_ORIGIN))
                found = models.Filter(must=[lone], must_not=[present])
            else:
                ours = models.FieldCondition(key=tag, match=models.MatchAny(any=values))
                found = models.Filter(must_not=[present, ours])
            with self._errors(f"read collection '{name}'", "check --collection"):
                records, _ = self.client.scroll(name, scroll_filter=found, limit=1)
            if records:
                value = (records[0].payload or {}).get(tag)
                return f"has its own values in payload key '{tag}' (e.g. {value!r}), {TAG_FIX}"
        return None

    def rank_problem(self, name: str) -> str | None:
        return None  # payload is schemaless: any point can take the key

    def write_ranks(self, name: str, ids: np.ndarray, ranks: np.ndarray | None) -> int:
        wanted = ids.tolist()
        with self._errors(f"write {RANK_FIELD} to collection '{name}'", "check --collection"):
            # Only points that exist: a server refuses the batch for one missing id.
            found = {str(r.id) for r in self.client.retrieve(name, ids=wanted, with_payload=False)}
            kept = [i for i in wanted if str(i) in found]
            if not kept:
                return 0
            ops: list[Any]
            if ranks is None:
                # Deleting the key leaves the rest of the payload as it is.
                ops = [
                    models.DeletePayloadOperation(
                        delete_payload=models.DeletePayload(keys=[RANK_FIELD], points=kept)
                    )
                ]
            else:
                rank_of = dict(zip(wanted, ranks.tolist(), strict=True))
                # set_payload merges the keys given into the payload; one rank per point,
                # so one operation each, all in one request.
                ops = [
                    models.SetPayloadOperation(
                        set_payload=models.SetPayload(payload={RANK_FIELD: rank_of[i]}, points=[i])
                    )
                    for i in kept
                ]
            self.client.batch_update_points(name, ops, wait=True)
        return len(kept)

    def rank_filter(self) -> str:
        return json.dumps({"must": [{"key": RANK_FIELD, "range": {"gte": 1}}]})

    def flush(self, name: str) -> None:
        """Every write above waits for the server's acknowledgement; nothing is buffered."""

    def drop_collection(self, name: str) -> None:
        with self._errors(f"drop collection '{name}'", "check --collection"):
            self.client.delete_collection(name)

    # -- aliases ---------------------------------------------------------------------
    def alias_target(self, alias: str) -> str | None:
        return self._aliases().get(alias)

    def point_alias(self, alias: str, target: str) -> None:
        create = models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=target, alias_name=alias)
        )
        ops: list[Any] = [create]
        if self.alias_target(alias) is not None:
            # Delete + create in one request: Qdrant applies the list atomically.
            delete = models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))
            ops = [delete, create]
        with self._errors(f"point alias '{alias}' at '{target}'", "check that the target exists"):
            self.client.update_collection_aliases(change_aliases_operations=ops)

    # -- ledger ------------------------------------------------------------------------
    def _ledger_ready(self, create: bool) -> bool:
        with self._errors(f"open the ledger collection '{LEDGER_COLLECTION}'", "check --uri"):
            if self.client.collection_exists(LEDGER_COLLECTION):
                return True
            if create:
                # Qdrant needs a vector per point; a 1-d constant one costs nothing.
                self.client.create_collection(
                    LEDGER_COLLECTION,
                    vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT),
                )
            return create

    @staticmethod
    def _ledger_id(key: str) -> str:
        return str(uuid.uuid5(_LEDGER_NS, key))

    def ledger_get(self, key: str) -> dict[str, Any] | None:
        if not self._ledger_ready(create=False):
            return None
        with self._errors(f"read ledger entry '{key}'", "check --uri"):
            found = self.client.retrieve(LEDGER_COLLECTION, ids=[self._ledger_id(key)])
        return json.loads(found[0].payload["record"]) if found and found[0].payload else None

    def ledger_put(self, key: str, record: dict[str, Any]) -> None:
        self._ledger_ready(create=True)
        point = models.PointStruct(
            id=self._ledger_id(key),
            vector=[1.0],
            payload={"key": key, "record": json.dumps(record, sort_keys=True)},
        )
        with self._errors(f"write ledger entry '{key}'", "check --uri"):
            self.client.upsert(LEDGER_COLLECTION, [point], wait=True)

    def ledger_list(self) -> list[dict[str, Any]]:
        if not self._ledger_ready(create=False):
            return []
        records = [r for page in self._pages(LEDGER_COLLECTION, 256, None) for r in page]
        entries = sorted((r.payload["key"], r.payload["record"]) for r in records if r.payload)
        return [json.loads(record) for _, record in entries]
