"""Qdrant's filter language: filter JSON, validated into ``models.Filter``.

Local mode has no server to parse the text for us, so a bad filter is caught
here, before any row is read, with the path of the first invalid part.
"""

from __future__ import annotations

from pydantic import ValidationError
from qdrant_client import models

from dmu_migrate.errors import InputError


def parse_filter(text: str | None) -> models.Filter | None:
    """A Qdrant filter from its JSON text; InputError naming --filter when it is not one."""
    if not text:
        return None
    try:
        return models.Filter.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "top level"
        raise InputError(
            f"--filter '{text}' is not a Qdrant filter ({where}: {first['msg']}); "
            f'give filter JSON such as {{"must": [{{"key": "label", "match": {{"value": 3}}}}]}}'
        ) from exc
