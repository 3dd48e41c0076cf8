"""The Parquet store's filter language: a subset of the Milvus expression syntax.

One filter text reads the same on Milvus and on Parquet snapshots: clauses
``field op value`` joined by ``and``, with ``==``, ``!=``, ``<``, ``<=``,
``>``, ``>=``, ``in [...]``, ``not in [...]`` and JSON values. A row without
the field matches only ``!=`` and ``not in`` (a row not yet tagged is "not at
v2").
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dmu_migrate.errors import InputError

_CLAUSE = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|>=|<=|>|<|not\s+in\b|in\b)\s*"
    r"(\[[^\]]*\]|\"(?:[^\"\\]|\\.)*\"|'[^']*'|[-+]?[0-9][0-9.eE+-]*|true|false)\s*"
)
_COMPARE = {"==": pc.equal, "!=": pc.not_equal, ">": pc.greater, ">=": pc.greater_equal}
_COMPARE.update({"<": pc.less, "<=": pc.less_equal})


def _literal(text: str, expr: str) -> Any:
    if text.startswith("'"):
        return text[1:-1]
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--filter '{expr}' has a bad value {text}; use JSON values") from exc


Clause = tuple[str, str, Any]  # field, operator (as in the text, one space), value


def parse_clauses(expr: str) -> list[Clause]:
    """The clauses of a Milvus-style filter (see the module docstring), in order."""
    clauses: list[Clause] = []
    pos = 0
    while True:
        m = _CLAUSE.match(expr, pos)
        if m is None:
            raise InputError(
                f"--filter '{expr}' is not understood near '{expr[pos : pos + 20]}'; the Parquet "
                f'store takes clauses like label == 3 and dmu_version != "v2" joined by "and"'
            )
        op = " ".join(m.group(2).split())
        clauses.append((m.group(1), op, _literal(m.group(3), expr)))
        pos = m.end()
        if pos == len(expr):
            return clauses
        connective = re.compile(r"and\s", re.IGNORECASE).match(expr, pos)
        if connective is None:
            raise InputError(
                f"--filter '{expr}' joins clauses with something other than 'and' near "
                f"'{expr[pos : pos + 20]}'; the Parquet store supports 'and' only"
            )
        pos = connective.end()


def milvus_style_mask(table: pa.Table, expr: str) -> pa.Array:
    """Rows matching a Milvus-style filter (see the module docstring)."""
    keep = pa.array(np.ones(len(table), dtype=bool))
    for name, op, value in parse_clauses(expr):
        negated = op in ("!=", "not in")
        if name not in table.column_names:
            hit = pa.array(np.full(len(table), negated))
        else:
            column = table[name]
            try:
                if op in ("in", "not in"):
                    hit = pc.is_in(column, value_set=pa.array(value))
                    hit = pc.invert(hit) if negated else hit
                else:
                    hit = _COMPARE[op](column, pa.scalar(value))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError) as exc:
                raise InputError(
                    f"--filter '{expr}' compares field '{name}' ({column.type}) with "
                    f"{json.dumps(value)}; use a value of the field's type"
                ) from exc
            hit = pc.fill_null(hit, negated)
        keep = pc.and_(keep, hit)
    return keep
