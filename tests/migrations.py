"""How the tests start a migration: through the library, or as CLI arguments.

``run`` plans and evolves a collection with batches of 32 unless ``options`` says
otherwise; ``evolve_args``/``verify_args`` are the arguments of an evolve of the
digits gallery (tests/galleries.py) and of the verify after it.
"""

from __future__ import annotations

from typing import Any

from galleries import Gallery

from dmu_migrate.artifact import Artifact
from dmu_migrate.evolve.pipeline import EvolveOptions, EvolveResult, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores.base import VectorStore


def run(
    store: VectorStore, collection: str, artifacts: list[Artifact], **kwargs: Any
) -> EvolveResult:
    options = kwargs.pop("options", EvolveOptions(batch_size=32))
    plan = make_plan(store, collection, AdapterChain(artifacts), **kwargs)
    return evolve(store, plan, options)


def evolve_args(gallery: Gallery, artifact: Artifact, *more: str) -> list[str]:
    """The CLI arguments of an evolve of the digits gallery through ``artifact``."""
    return [
        "evolve",
        "--collection",
        "digits",
        "--adapter",
        str(artifact.path),
        "--uri",
        str(gallery.db),
        *more,
    ]


def verify_args(gallery: Gallery, artifact: Artifact, *more: str) -> list[str]:
    """The CLI arguments of a verify of that evolve (the alias moved to digits__v2)."""
    return [
        "verify",
        "--collection",
        "digits__v1",
        "--alias",
        "digits",
        "--adapter",
        str(artifact.path),
        "--uri",
        str(gallery.db),
        *more,
    ]
