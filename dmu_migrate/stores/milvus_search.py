"""Search parameters fitted to a Milvus vector index, for a search that must not miss.

A graph or cluster index searched at its defaults trades recall for speed: an
HNSW index searched with ``ef`` no larger than k missed a vector's own id on
a 100k-row collection built with M 16 and efConstruction 64, and found it at
ef 64. A check that searches a collection with its own vectors wants the
other end of that trade, so the budget here is generous and grows with the
index: an HNSW ``ef`` well above k (Milvus allows up to 32768), an IVF ``nprobe``
of a quarter of the lists. A second look at rows the first search missed widens
that budget again (``widen``), up to the limits Milvus accepts.
"""

from __future__ import annotations

from typing import Any

from dmu_migrate.stores.base import SEARCH_EF
from dmu_migrate.stores.milvus_schema import IndexSpec

NPROBE_MIN = 32  # IVF lists searched at least (all of them when there are fewer)
DISKANN_LIST = 256  # DiskANN's search_list, like HNSW's ef
SCANN_REORDER = 256  # ScaNN candidates re-ranked by exact distance
MAX_EF = 32768  # the largest HNSW ef (and CAGRA itopk, DiskANN search_list) Milvus takes


def fitted(
    index: IndexSpec | None, k: int, lite: bool, widen: int = 1
) -> tuple[dict[str, Any], str]:
    """(``params`` of a search request, a phrase naming them) for ``index``, the budget
    multiplied by ``widen``; ``lite`` for Milvus Lite, whose AUTOINDEX is an HNSW graph
    (FAISS) that takes ``ef``."""
    if index is None:
        return {}, "no index (exact)"
    kind = index.index_type.upper()
    params: dict[str, Any] = {}
    if kind.startswith("HNSW") or (lite and kind == "AUTOINDEX"):  # and HNSW_SQ/PQ/PRQ
        params = {"ef": min(MAX_EF, max(k, SEARCH_EF) * widen)}
    elif kind.startswith(("IVF", "GPU_IVF", "SCANN")):
        lists = _int(index.params.get("nlist"), 128)
        params = {"nprobe": min(lists, max(NPROBE_MIN, lists // 4) * widen)}
        if kind == "SCANN":
            params["reorder_k"] = max(k, SCANN_REORDER)
    elif kind == "DISKANN":
        params = {"search_list": min(MAX_EF, max(k, DISKANN_LIST) * widen)}
    elif kind == "GPU_CAGRA":
        params = {"itopk_size": min(MAX_EF, max(k, SEARCH_EF) * widen)}
    # FLAT and BIN_FLAT are exact; a server's AUTOINDEX chooses its own search parameters.
    said = " ".join(f"{key}={value}" for key, value in params.items())
    return params, f"{index.index_type} {said or 'at its defaults'}".strip()


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
