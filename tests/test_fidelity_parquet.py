"""Parquet collections whose part files disagree are refused with one line naming the file."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from backends import Backend
from galleries import Digits
from limits import limit

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import StoreError
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.run import Outcome
from dmu_migrate.evolve.transform import AdapterChain


def other_part(directory: Path, kind: str, dim: int) -> Path:
    """A second part file next to the seeded one, disagreeing in one way."""
    path = directory / f"part-{kind}.parquet"
    if kind == "corrupt":
        path.write_bytes(b"PAR1 this is not a parquet file PAR1")
        return path
    size = dim + 1 if kind == "vector-size" else dim
    flat = pa.array(np.ones(2 * size, dtype=np.float32))
    label = pa.array(["a", "b"]) if kind == "column-type" else pa.array([1, 2])
    table = pa.table(
        {
            "id": pa.array([900, 901]),
            "vector": pa.FixedSizeListArray.from_arrays(flat, size),
            "label": label,
        }
    ).replace_schema_metadata({"dmu_seq": str(time.time_ns())})
    pq.write_table(table, path)
    return path


@limit(120)
@pytest.mark.parametrize("kind", ["column-type", "vector-size", "corrupt"])
def test_a_part_file_that_disagrees_is_refused_naming_it(
    tmp_path: Path, digits: Digits, artifact: Artifact, kind: str
) -> None:
    backend = Backend("parquet", f"parquet:{tmp_path / 'parquet'}", tmp_path)
    ids = np.arange(1, 21)
    labels = [int(v) for v in digits.y_te[:20]]
    backend.seed("g__v1", ids, digits.old_te[:20], {"label": labels}, alias="g")
    bad = other_part(tmp_path / "parquet" / "g__v1", kind, digits.old_te.shape[1])
    store = backend.open_store()
    try:
        with pytest.raises(StoreError) as caught:
            evolve(store, make_plan(store, "g", AdapterChain([artifact])), EvolveOptions(8))
        message = str(caught.value)
        assert "\n" not in message and f"part file '{bad}'" in message, message
        assert ("rewrite or remove" in message) or ("restore it" in message)
        assert not (tmp_path / "parquet" / "g__v2").exists()
        assert not (tmp_path / "parquet" / "ledger.json").exists()
        bad.unlink()  # the fix the message names: the collection reads again
        result = evolve(store, make_plan(store, "g", AdapterChain([artifact])), EvolveOptions(8))
        assert result.outcome == Outcome.DONE and result.rows_written == 20
    finally:
        backend.close_stores()
