"""What a Qdrant collection is configured with, beside its dense vectors, carried over.

Sparse vectors, HNSW, optimizer, WAL and quantization settings, shards, replication
and on-disk payload, and payload indexes. Local mode (qdrant-client's pure-Python
stand-in) keeps none of the index and storage settings and has no payload indexes:
there only sparse vectors are carried, since they are data.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from qdrant_client import QdrantClient, models


def _diff(config: BaseModel | None, kind: type[BaseModel]) -> Any:
    """A config as read, as the ``...Diff`` model that create_collection takes."""
    if config is None:
        return None
    values = config.model_dump(exclude_none=True)
    return kind(**{k: v for k, v in values.items() if k in kind.model_fields})


def create_options(client: QdrantClient, source: str, local: bool) -> dict[str, Any]:
    """create_collection keywords (besides vectors_config) that rebuild ``source``'s setup."""
    info = client.get_collection(source)
    params = info.config.params
    options: dict[str, Any] = {}
    if params.sparse_vectors:
        options["sparse_vectors_config"] = dict(params.sparse_vectors)
    if local:
        return options
    config = info.config
    options.update(
        shard_number=params.shard_number,
        replication_factor=params.replication_factor,
        write_consistency_factor=params.write_consistency_factor,
        on_disk_payload=params.on_disk_payload,
        hnsw_config=_diff(config.hnsw_config, models.HnswConfigDiff),
        optimizers_config=_diff(config.optimizer_config, models.OptimizersConfigDiff),
        wal_config=_diff(config.wal_config, models.WalConfigDiff),
        quantization_config=config.quantization_config,
    )
    return {k: v for k, v in options.items() if v is not None}


def payload_indexes(client: QdrantClient, source: str) -> dict[str, Any]:
    """Payload key -> the field_schema that indexes it as in ``source``."""
    schema = client.get_collection(source).payload_schema or {}
    return {key: info.params or info.data_type for key, info in schema.items()}


def difference(
    want: models.CollectionInfo, client: QdrantClient, target: str, local: bool
) -> str | None:
    """What ``target`` lacks of the source's setup ``want`` (None: nothing), as created."""
    got = client.get_collection(target)
    sparse = (want.config.params.sparse_vectors or {}, got.config.params.sparse_vectors or {})
    if sparse[0] != sparse[1]:
        return f"sparse vectors {sorted(sparse[1])} instead of {sorted(sparse[0])}"
    if local:
        return None
    # Servers fill in defaults of their own, so only what cannot be a default is compared.
    quantized = (want.config.quantization_config, got.config.quantization_config)
    if (quantized[0] is None) != (quantized[1] is None):
        return f"quantization {quantized[1]} instead of {quantized[0]}"
    lacking = sorted(set(want.payload_schema or {}) - set(got.payload_schema or {}))
    if lacking:
        return f"no payload index on {lacking}"
    return None
