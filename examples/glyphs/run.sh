#!/usr/bin/env bash
# CJK glyph identification: old 256-d head on 30% of the training ideographs,
# new model on 100%, test ideographs unseen in training. Run from the repository root.
# Every training setting is the default: this is the data nobody tuned for.
set -euo pipefail
DATA=${DATA:-data/glyphs}
OUT=${OUT:-adapters}

python examples/glyphs/prepare.py --out "$DATA"

# The full-backfill reference: the new model trained alone.
dmu-migrate train "$DATA/train.parquet" --name glyphs-independent --method independent \
  --out-dir "$OUT" --overwrite
# DMU: selective inheritance, then the adapter psi fitted to the kept new model.
dmu-migrate train "$DATA/train.parquet" --name glyphs-dmu --out-dir "$OUT" --overwrite
dmu-migrate evaluate "$DATA/eval.parquet" --adapter "$OUT/glyphs-dmu" \
  --reference "$OUT/glyphs-independent" --plot glyphs-dmu.png
# The transition mode: old and evolved vectors side by side while the old encoder runs.
dmu-migrate transition --adapter "$OUT/glyphs-dmu" --overwrite
