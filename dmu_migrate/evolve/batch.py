"""One batch read from the source, screened for bad vectors and evolved: what the main
pass (pipeline.py) and the bulk pass (bulk_pass.py) both write."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dmu_migrate.evolve.plan import Plan
from dmu_migrate.evolve.screen import screen
from dmu_migrate.evolve.settings import EvolveOptions
from dmu_migrate.stores.base import Batch, Id, id_value


@dataclass
class Prepared:
    """One batch ready to write: good rows, their evolved vectors, and what was left out."""

    batch: Batch
    evolved: np.ndarray
    skipped: list[Id]
    last_id: Id  # the last id read, kept or not: the cursor after this batch


def prepare(raw: Batch, plan: Plan, options: EvolveOptions) -> Prepared:
    batch, skipped = screen(raw, plan, options.skip_bad_vectors)
    evolved = plan.chain(batch.vectors) if len(batch) else batch.vectors
    return Prepared(batch, evolved, skipped, id_value(raw.ids[-1]))
