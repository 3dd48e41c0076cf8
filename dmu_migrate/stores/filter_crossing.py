"""A --filter carried into another store kind, for evolve --target-uri.

The run applies its filter to the target too: it counts, lists and compares
the evolved rows of the subset there (finish.py, verify.py, sync.py). The
target holds the source's fields under the same names (stores/crossing.py), so
the filter is rewritten clause by clause into the target's language. What
crosses is the language every kind speaks: clauses ``field op value`` joined by
``and`` with ==, !=, <, <=, >, >=, in, not in (parquet_filter.py). From
Qdrant that is a filter whose ``must`` holds match value / any / except and
range conditions and whose ``must_not`` holds match value / any; anything
else (should, nested, geo, full-text, has_id, is_empty) is refused in one line
before a store is written.

A row without a value (a null, or a missing key) matches != and not in on
Qdrant and Parquet, but no comparison at all on Milvus; so between Milvus and
another kind only ==, in and ranges cross, and the subset is the same rows on
both sides.
"""

from __future__ import annotations

import json
from typing import Any

from dmu_migrate.errors import InputError
from dmu_migrate.stores.crossing import NAMES
from dmu_migrate.stores.parquet_filter import Clause, parse_clauses

FIX = (
    "give clauses like label == 3 joined by 'and' (==, !=, <, <=, >, >=, in, not in), "
    "or evolve the whole collection"
)
_RANGE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_NEGATED = ("!=", "not in")


def carry(text: str, source_kind: str, target_kind: str) -> str:
    """``text`` (a filter in the source kind's language) in the target kind's language."""
    if source_kind == "qdrant":
        clauses = _from_qdrant(text)
    else:
        try:
            clauses = parse_clauses(text)
        except InputError as exc:
            if source_kind == "parquet":
                raise  # the Parquet store's own language: its own message
            raise InputError(
                f"--filter '{text}' is more than --target-uri carries into another store; {FIX}"
            ) from exc
    if (source_kind == "milvus") != (target_kind == "milvus"):
        negated = [c for c in clauses if c[1] in _NEGATED]
        if negated:
            name, op, _ = negated[0]
            raise InputError(
                f"--filter '{text}' has '{name} {op} ...', which matches rows without a "
                f"value on one side of {NAMES[source_kind]} -> {NAMES[target_kind]} and not "
                f"on the other; use ==, in or ranges with this --target-uri"
            )
    if target_kind == "qdrant":
        return _to_qdrant(clauses, text)
    return " and ".join(f"{name} {op} {json.dumps(value)}" for name, op, value in clauses)


def _from_qdrant(text: str) -> list[Clause]:
    # Here, not at the top: it loads qdrant_client (seconds), which a Parquet or Milvus
    # store never needs.
    from dmu_migrate.stores.qdrant_filter import parse_filter

    parsed = parse_filter(text)
    if parsed is None:
        return []
    clauses: list[Clause] = []
    for key, conditions in (("must", parsed.must), ("must_not", parsed.must_not)):
        for condition in _listed(conditions):
            clauses.extend(_clauses_of(condition, key == "must_not", text))
    unsupported = [k for k in ("should", "min_should") if getattr(parsed, k, None)]
    if unsupported:
        raise InputError(f"--filter '{text}' uses '{unsupported[0]}' with --target-uri; {FIX}")
    return clauses


def _listed(conditions: Any) -> list[Any]:
    if conditions is None:
        return []
    return conditions if isinstance(conditions, list) else [conditions]


def _clauses_of(condition: Any, negated: bool, text: str) -> list[Clause]:
    from qdrant_client import models

    def refused(what: str) -> InputError:
        return InputError(f"--filter '{text}' has {what}, which --target-uri cannot carry; {FIX}")

    if not isinstance(condition, models.FieldCondition):
        raise refused(f"a condition of kind {type(condition).__name__}")
    key, match = condition.key, condition.match
    spatial = ("geo_bounding_box", "geo_radius", "geo_polygon", "values_count")
    if any(getattr(condition, k, None) is not None for k in spatial) or (match is None) == (
        condition.range is None
    ):
        raise refused(f"a condition on '{key}' other than one match or one range")
    if match is None:
        if negated:
            raise refused(f"a range on '{key}' under must_not")
        bounds = condition.range.model_dump(exclude_none=True)  # type: ignore[union-attr]
        return [(key, _RANGE[b], v) for b, v in bounds.items()]
    if isinstance(match, models.MatchValue):
        return [(key, "!=" if negated else "==", match.value)]
    if isinstance(match, models.MatchAny):
        return [(key, "not in" if negated else "in", list(match.any))]
    if isinstance(match, models.MatchExcept) and not negated:
        return [(key, "not in", list(match.except_))]
    raise refused(f"a {type(match).__name__} on '{key}'")


def _to_qdrant(clauses: list[Clause], text: str) -> str:
    from pydantic import ValidationError
    from qdrant_client import models

    must: list[models.Condition] = []
    must_not: list[models.Condition] = []
    for key, op, value in clauses:
        try:
            if op in ("==", "!="):
                # Qdrant matches strings, integers and booleans exactly; a float by a range.
                exact = isinstance(value, (str, bool, int))
                condition = (
                    models.FieldCondition(key=key, match=models.MatchValue(value=value))
                    if exact
                    else models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
                )
                (must if op == "==" else must_not).append(condition)
            elif op in ("in", "not in"):
                condition = models.FieldCondition(key=key, match=models.MatchAny(any=value))
                (must if op == "in" else must_not).append(condition)
            else:
                bound = {v: k for k, v in _RANGE.items()}[op]
                must.append(models.FieldCondition(key=key, range=models.Range(**{bound: value})))
        except ValidationError as exc:
            raise InputError(
                f"--filter '{text}' compares '{key}' with {json.dumps(value)} by '{op}', which "
                f"Qdrant cannot (ranges are numeric; in lists hold strings or integers); {FIX}"
            ) from exc
    return models.Filter(must=must or None, must_not=must_not or None).model_dump_json(
        exclude_none=True
    )
