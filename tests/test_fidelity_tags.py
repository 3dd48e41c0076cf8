"""A source whose own fields carry the tag names is refused before anything is written;
sources that evolve itself tagged (chained upgrades) are not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from backends import Backend
from galleries import Digits
from limits import limit

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import InputError
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.run import Outcome
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores.base import LEDGER_COLLECTION

ROWS = 24


def seed(backend: Backend, digits: Digits, fields: dict[str, list[Any]]) -> tuple[str, str]:
    name, alias = backend.unique("tagged"), backend.unique("live")
    ids = np.arange(1, ROWS + 1)
    backend.seed(name, ids, digits.old_te[:ROWS], fields, alias=alias)
    return name, alias


@limit(300)
@pytest.mark.parametrize(
    "fields, named",
    [
        ({"dmu_origin": ["camera-a"] * ROWS}, "dmu_origin"),
        (
            {
                "dmu_version": ["2024-01"] * ROWS,
                "dmu_from": ["import"] * ROWS,
                "dmu_origin": ["evolved"] * ROWS,
            },
            "dmu_version",
        ),
        ({"dmu_version": list(range(ROWS))}, "dmu_version"),
    ],
    ids=["origin-of-their-own", "all-three-with-their-values", "integer-version"],
)
def test_a_user_field_named_like_a_tag_is_refused_before_writing(
    backend: Backend, digits: Digits, artifact: Artifact, fields: dict[str, list[Any]], named: str
) -> None:
    source, alias = seed(backend, digits, fields)
    store = backend.open_store()
    before = backend.list_collections()
    with pytest.raises(InputError) as caught:
        evolve(store, make_plan(store, alias, AdapterChain([artifact])), EvolveOptions(8))
    message = str(caught.value)
    assert "\n" not in message
    assert f"collection '{source}' has its own" in message and f"'{named}'" in message
    assert "copy the collection with that field renamed" in message
    assert backend.list_collections() == before  # no target, no ledger
    # A fresh store has no ledger; the session's server keeps an empty one between tests.
    assert LEDGER_COLLECTION not in before or backend.kind == "milvus-server"
    assert store.ledger_list() == []
    assert store.alias_target(alias) == source


@limit(600)
def test_a_source_tagged_by_evolve_evolves_again(
    backend: Backend, digits: Digits, artifact: Artifact, artifact_v3: Artifact
) -> None:
    """v1 -> v2 writes tags; v2 -> v3 reads that tagged collection as its source."""
    _, alias = seed(backend, digits, {"name": [f"n{i}" for i in range(ROWS)]})
    store = backend.open_store()
    first = evolve(store, make_plan(store, alias, AdapterChain([artifact])), EvolveOptions(8))
    assert first.outcome == Outcome.DONE
    second = evolve(store, make_plan(store, alias, AdapterChain([artifact_v3])), EvolveOptions(8))
    assert second.outcome == Outcome.DONE and second.source == first.target
    rows = backend.read_all(second.target)
    assert {r["dmu_version"] for r in rows.values()} == {"v3"}
