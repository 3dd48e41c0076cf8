#!/usr/bin/env bash
# A model upgrade on your own data, with the three commands of dmu-migrate.
#   train.parquet: label, old (stored old embedding), x (new model's input)
#   eval.parquet:  the same columns for held-out items, plus role = query|gallery
#   faces.db:      the Milvus Lite file whose alias 'faces' serves the old vectors
set -euo pipefail
dmu-migrate train train.parquet --name faces-v2 --from-version v1 --to-version v2
dmu-migrate evaluate eval.parquet --adapter adapters/faces-v2
dmu-migrate evolve --collection faces --adapter adapters/faces-v2 --uri faces.db
