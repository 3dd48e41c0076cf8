"""Serve the upgraded text collection: embed queries the new way and search the alias.

What an application does once ``evolve`` has moved the alias:

1. Load the collection. Milvus Lite loads nothing in a new process (a search
   fails with "is in state 'released'"), so call ``load_collection`` first; on a
   Milvus server it is a no-op when already loaded. Qdrant needs no load.
2. Embed the query: the text goes through the new backbone (all-MiniLM-L6-v2,
   the 384-d embedding that prepare.py writes as column ``x`` and ``train``
   learned from), then through the artifact's ``new_model.onnx`` (the trained
   head). An adapter-only artifact (``--method adapter``) has no
   ``new_model.onnx``: the backbone's embedding is the query as it is.
3. Search the alias. It points at the evolved collection, whose vectors are
   psi(old) in the new model's space.

New items are embedded like queries and written through the alias with
``dmu_origin`` = ``native``, so that later ``evolve`` runs leave them alone. With
an artifact from ``dmu-migrate calibrate`` (one dimension wider: evolved rows
[psi(o) ; k], queries [q ; 1]), new items go through its ``item_model.onnx``
instead ([f ; 0]): ``item_encoder`` picks it.

Usage (after run.sh, which ends with these steps):
  python examples/wordnet_text/serve.py --uri words.db --alias words \
      --adapter adapters/wordnet-dmu "a motor vehicle with four wheels"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare import NEW_MODEL, TOKENIZER, TextEncoder, wheel_file  # noqa: E402


class QueryEncoder:
    """text -> new backbone -> new_model.onnx (when the artifact has one) -> unit vector."""

    def __init__(self, adapter: Path, head_file: str = "new_model.onnx") -> None:
        import onnxruntime as ort

        self.backbone = TextEncoder(wheel_file(*NEW_MODEL), wheel_file(*TOKENIZER))
        head = adapter / head_file
        self.head = ort.InferenceSession(str(head)) if head.exists() else None
        manifest = json.loads((adapter / "manifest.json").read_text())
        self.version = str(manifest.get("to_version", "v2"))

    def __call__(self, texts: list[str]) -> np.ndarray:
        x = self.backbone(texts)  # (n, 384): what column x held at training
        if self.head is None:
            return x
        name = self.head.get_inputs()[0].name  # "x"
        return np.asarray(self.head.run(None, {name: x})[0], np.float32)


def item_encoder(adapter: Path) -> QueryEncoder:
    """The encoder of new items: a calibrated artifact's item_model.onnx, else the queries'."""
    item = "item_model.onnx"
    return QueryEncoder(adapter, item if (adapter / item).exists() else "new_model.onnx")


def is_qdrant(uri: str) -> bool:
    return uri.startswith(("qdrant:", "qdrants://")) or ":6333" in uri or ":6334" in uri


class Index:
    """The application's view of one alias on Milvus or Qdrant (their own clients)."""

    def __init__(self, uri: str, alias: str) -> None:
        self.alias = alias
        self.qdrant = is_qdrant(uri)
        self.client: Any
        if self.qdrant:
            from qdrant_client import QdrantClient

            local = uri.startswith("qdrant:") and not uri.startswith("qdrant://")
            self.client = (
                QdrantClient(path=uri.removeprefix("qdrant:")) if local else QdrantClient(url=uri)
            )
        else:
            from pymilvus import MilvusClient

            self.client = MilvusClient(uri)
            self.client.load_collection(alias)  # a new process finds Lite collections released

    def search(self, vectors: np.ndarray, k: int = 5) -> list[list[tuple[Any, float, str]]]:
        """(id, score, text) of the k nearest rows for each vector."""
        if self.qdrant:
            return [
                [
                    (p.id, p.score, str((p.payload or {}).get("text")))
                    for p in self.client.query_points(
                        self.alias, query=v.tolist(), limit=k, with_payload=True
                    ).points
                ]
                for v in vectors
            ]
        hits = self.client.search(
            self.alias, data=vectors.tolist(), limit=k, output_fields=["text"]
        )
        return [[(h["id"], h["distance"], h["entity"]["text"]) for h in row] for row in hits]

    def insert_native(
        self, ids: list[int], labels: list[str], texts: list[str], vectors: np.ndarray, version: str
    ) -> None:
        """New items, embedded like queries, tagged as the application's own rows."""
        tags = {"dmu_origin": "native", "dmu_version": version}
        if self.qdrant:
            from qdrant_client import models

            self.client.upsert(
                self.alias,
                points=[
                    models.PointStruct(
                        id=i, vector=v.tolist(), payload={"label": a, "text": t, **tags}
                    )
                    for i, a, t, v in zip(ids, labels, texts, vectors, strict=True)
                ],
            )
            return
        # The evolved Milvus collection declares the tags as fields: fill every one.
        fields = {f["name"] for f in self.client.describe_collection(self.alias)["fields"]}
        blank = {f: "" for f in ("dmu_from", "dmu_src") if f in fields}
        rows = [
            {"id": i, "vector": v.tolist(), "label": a, "text": t, **tags, **blank}
            for i, a, t, v in zip(ids, labels, texts, vectors, strict=True)
        ]
        self.client.insert(self.alias, rows)

    def close(self) -> None:
        self.client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("queries", nargs="+", help="Query texts (glosses, questions).")
    parser.add_argument("--uri", required=True, help="words.db, http://host:19530 or qdrant:DIR")
    parser.add_argument("--alias", default="words")
    parser.add_argument("--adapter", type=Path, required=True, help="The artifact evolve used.")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    encoder = QueryEncoder(args.adapter)
    index = Index(args.uri, args.alias)
    try:
        for query, hits in zip(
            args.queries, index.search(encoder(args.queries), args.k), strict=True
        ):
            print(query)
            for _, score, text in hits:
                print(f"  {score:.3f}  {text}")
    finally:
        index.close()


if __name__ == "__main__":
    main()
