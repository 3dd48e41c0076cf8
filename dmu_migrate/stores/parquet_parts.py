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
            merged = unify(first[0], column)
            if merged is None:
                raise StoreError(
                    f"part file '{path}' holds column '{column.name}' as {kind}, but part file "
                    f"'{first[1]}' holds it as {first[0]}; rewrite or remove the wrong one"
                )
            seen[column.name] = (merged, first[1])


def unify(have: pa.DataType, column: pa.Field) -> pa.DataType | None:
    """The type a read merges ``have`` and ``column`` into (null takes any type, ints
    widen, structs union), or None where it cannot and the read would fail."""
    try:
        merged = pa.unify_schemas(
            [pa.schema([column.with_type(have)]), pa.schema([column])],
            promote_options="permissive",
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return merged.field(0).type


class ColumnTypes:
    """Per collection directory, the type each column merges to over its part files, kept
    up to date across this store's own writes, so that a write can be checked against
    every earlier one without reading them all again (one writer at a time)."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[tuple[Any, ...], dict[str, pa.DataType]]] = {}

    @staticmethod
    def _listing(directory: Path) -> tuple[Any, ...]:
        out = []
        for path in sorted(directory.glob("part-*.parquet")):
            stat = path.stat()
            out.append((path.name, stat.st_ino, stat.st_mtime_ns, stat.st_size))
        return tuple(out)

    def of(self, directory: Path) -> dict[str, pa.DataType]:
        listing = self._listing(directory)
        known = self._known.get(directory)
        if known is not None and known[0] == listing:
            return known[1]
        types: dict[str, pa.DataType] = {}
        for name, *_ in listing:
            try:
                schema = pq.read_schema(directory / name)
            except (pa.ArrowException, OSError):
                continue  # a read names that file (read_part); the write is not the place
            for column in schema:
                have = types.get(column.name)
                merged = column.type if have is None else unify(have, column)
                if merged is not None:
                    types[column.name] = merged
        self._known[directory] = (listing, types)
        return types

    def conflict(
        self, directory: Path, table: pa.Table
    ) -> tuple[str, pa.DataType, pa.DataType] | None:
        """(column, its type in ``table``, its type in earlier parts) where no read could
        merge them; None when ``table`` can be written beside them."""
        types = self.of(directory)
        for column in table.schema:
            have = types.get(column.name)
            if have is not None and unify(have, column) is None:
                return column.name, column.type, have
        return None

    def wrote(self, directory: Path, table: pa.Table) -> None:
        """``table`` is now a part of ``directory``: its types join the known ones."""
        known = self._known.get(directory)
        types = dict(known[1]) if known is not None else {}
        for column in table.schema:
            have = types.get(column.name)
            merged = column.type if have is None else unify(have, column)
            types[column.name] = merged if merged is not None else have
        self._known[directory] = (self._listing(directory), types)
