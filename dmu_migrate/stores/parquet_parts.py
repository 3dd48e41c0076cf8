"""Reading a Parquet collection's part files, refusing any that disagree with the rest.

Parts are written by this store, by hand (tests, users' exports) or copied in;
one with another type for a column, another vector size, or corrupt bytes would
otherwise stop a read deep inside Arrow with a traceback, or merge into rows of
the wrong shape. Each is refused with one line naming the file and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dmu_migrate.errors import StoreError


def read_part(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise StoreError(
            f"part file '{path}' is not readable Parquet ({detail}); restore it from a copy, "
            f"or move it out of the collection's directory to drop its rows"
        ) from exc


def check_parts(schema: dict[str, Any], parts: list[tuple[Path, pa.Table]]) -> None:
    """Every part's columns agree with schema.json's vector sizes and with each other."""
    dims: dict[str, int] = {k: int(v) for k, v in schema["vector_fields"].items()}
    seen: dict[str, tuple[pa.DataType, Path]] = {}
    for path, table in parts:
        for column in table.schema:
            kind = column.type
            if column.name in dims and not pa.types.is_null(kind):
                size = kind.list_size if pa.types.is_fixed_size_list(kind) else None
                if size != dims[column.name] or not pa.types.is_floating(kind.value_type):
                    raise StoreError(
                        f"part file '{path}' holds vector '{column.name}' as {kind}, but the "
                        f"collection's vectors are {dims[column.name]}-d floats (schema.json); "
                        f"rewrite or remove that file"
                    )
            first = seen.setdefault(column.name, (kind, path))
            try:  # what the merge will do: null takes any type, ints widen, structs union
                merged = pa.unify_schemas(
                    [pa.schema([column.with_type(first[0])]), pa.schema([column])],
                    promote_options="permissive",
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                raise StoreError(
                    f"part file '{path}' holds column '{column.name}' as {kind}, but part file "
                    f"'{first[1]}' holds it as {first[0]}; rewrite or remove the wrong one"
                ) from None
            seen[column.name] = (merged.field(0).type, first[1])
