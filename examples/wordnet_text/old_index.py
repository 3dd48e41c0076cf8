"""The application's collection before the upgrade: lemma texts embedded by the old model.

Writes the gallery rows of a table from prepare.py (role 'gallery': the lemma
texts, their synset as ``label`` and their paraphrase-MiniLM-L3-v2 embedding)
into a collection ``<name>__v1`` behind the alias ``<name>``, the state in which
a team serving the old model starts. Milvus (a Lite file or a server) or Qdrant
(local mode ``qdrant:DIR`` or a server URL).

Usage: python examples/wordnet_text/old_index.py --table data/wordnet_text/eval.parquet --uri words.db
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

DIM = 384


def gallery_rows(table: Path) -> tuple[list[int], list[str], list[str], np.ndarray]:
    """(ids, labels, texts, old vectors) of the table's gallery rows; ids count from 0."""
    t = pq.read_table(table)
    keep = np.asarray([r == "gallery" for r in t.column("role").to_pylist()])
    labels = [v for v, k in zip(t.column("label").to_pylist(), keep, strict=True) if k]
    texts = [v for v, k in zip(t.column("text").to_pylist(), keep, strict=True) if k]
    flat = np.asarray(t.column("old").combine_chunks().flatten(), np.float32)
    old = flat.reshape(-1, DIM)[keep]
    return list(range(len(texts))), labels, texts, old


def create(table: Path, uri: str, name: str = "words") -> int:
    """Write ``<name>__v1`` and point the alias ``name`` at it; returns the row count."""
    ids, labels, texts, old = gallery_rows(table)
    collection = f"{name}__v1"
    if uri.startswith(("qdrant:", "qdrant://", "qdrants://")) or ":6333" in uri:
        from qdrant_client import QdrantClient, models

        client = (
            QdrantClient(path=uri.removeprefix("qdrant:"))
            if uri.startswith("qdrant:") and not uri.startswith("qdrant://")
            else QdrantClient(url=uri)
        )
        try:
            client.create_collection(
                collection, vectors_config=models.VectorParams(size=DIM, distance="Cosine")
            )
            client.upsert(
                collection,
                points=models.Batch(
                    ids=ids,
                    vectors=old.tolist(),
                    payloads=[{"label": a, "text": b} for a, b in zip(labels, texts, strict=True)],
                ),
            )
            op = models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=collection, alias_name=name)
            )
            client.update_collection_aliases(change_aliases_operations=[op])
        finally:
            client.close()
        return len(ids)
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri)
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
        schema.add_field("label", DataType.VARCHAR, max_length=64)
        schema.add_field("text", DataType.VARCHAR, max_length=512)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
        client.create_collection(collection, schema=schema, index_params=index)
        rows = [
            {"id": i, "vector": v.tolist(), "label": a, "text": b}
            for i, v, a, b in zip(ids, old, labels, texts, strict=True)
        ]
        client.insert(collection, rows)
        client.create_alias(collection, name)
    finally:
        client.close()
    return len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, required=True, help="eval.parquet of prepare.py")
    parser.add_argument("--uri", required=True, help="words.db, http://host:19530 or qdrant:DIR")
    parser.add_argument("--name", default="words", help="The alias; the collection is NAME__v1.")
    args = parser.parse_args()
    rows = create(args.table, args.uri, args.name)
    print(f"{args.name}__v1: {rows} lemma texts, old-model vectors, behind alias '{args.name}'")


if __name__ == "__main__":
    main()
