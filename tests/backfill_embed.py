"""A ``backfill --embed`` callable for the tests: the artifact's new model on the digits.

Configured through the environment, so that it works the same in the test process
and in a ``dmu-migrate backfill`` child process:

    DMU_TEST_X        Parquet table with columns id and x (the new model's input)
    DMU_TEST_MODEL    the artifact's new_model.onnx
    DMU_TEST_FAIL_AT  optional: the call (1-based) that fails instead of embedding
    DMU_TEST_FAULT    "raise" (an exception, the default) or "kill" (SIGKILL this process)
    DMU_TEST_REMOVE   optional: a directory deleted at the first call (one that goes away
                      while the run works, such as a --metrics-file directory)
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from dmu_migrate.onnx_model import OnnxModel

CALLS: list[list[Any]] = []  # ids of each call in this process
NAMES: list[list[Any]] = []  # the stored "name" field each call was given


def embed(ids: np.ndarray, fields: dict[str, list[Any]]) -> np.ndarray:
    CALLS.append(ids.tolist())
    NAMES.append(list(fields.get("name", [])))
    if os.environ.get("DMU_TEST_REMOVE"):
        shutil.rmtree(os.environ["DMU_TEST_REMOVE"], ignore_errors=True)
    fail_at = os.environ.get("DMU_TEST_FAIL_AT")
    if fail_at and len(CALLS) == int(fail_at):
        if os.environ.get("DMU_TEST_FAULT") == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("the embedding service is down")
    table = pq.read_table(os.environ["DMU_TEST_X"])
    row = {i: k for k, i in enumerate(table.column("id").to_pylist())}
    x = np.asarray(table.column("x").to_pylist(), dtype=np.float32)
    return OnnxModel(Path(os.environ["DMU_TEST_MODEL"]))(x[[row[i] for i in ids.tolist()]])


VALUE = 3  # an attribute that is not callable
