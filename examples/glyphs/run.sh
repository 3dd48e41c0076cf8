#!/usr/bin/env bash
# CJK glyph identification: old 256-d head on 30% of the training ideographs,
# new model on 100%, test ideographs unseen in training. Run from the repository root.
set -euo pipefail
DATA=${DATA:-data/glyphs}
OUT=${OUT:-adapters}
COMMON=(--model mlp --hidden 512 --epochs 20 --out-dir "$OUT" --overwrite)

python examples/glyphs/prepare.py --out "$DATA"

# The full-backfill reference: the new model trained alone.
dmu-migrate train "$DATA/train.parquet" --name glyphs-independent --method independent "${COMMON[@]}"
# BCT (uniform inheritance, no adapter) and DMU (selective inheritance + adapter).
dmu-migrate train "$DATA/train.parquet" --name glyphs-bct --method bct "${COMMON[@]}"
dmu-migrate train "$DATA/train.parquet" --name glyphs-dmu --method dmu "${COMMON[@]}"
for m in bct dmu; do
  dmu-migrate evaluate "$DATA/eval.parquet" --adapter "$OUT/glyphs-$m" \
    --reference "$OUT/glyphs-independent" --plot "glyphs-$m.png"
done
