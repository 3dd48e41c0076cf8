#!/usr/bin/env bash
# The DMU paper's upgrade protocol on Fashion-MNIST: old CNN on 30% of the
# training data, new CNN on 100%. Run from the repository root.
set -euo pipefail
DATA=${DATA:-data/fashion_mnist}
OUT=${OUT:-adapters}
# The plug-in CNN is the example's architecture; every training setting is the default.
COMMON=(--model nets:cnn --out-dir "$OUT" --overwrite)
export PYTHONPATH="examples/fashion_mnist${PYTHONPATH:+:$PYTHONPATH}"  # for --model nets:cnn

python examples/fashion_mnist/prepare.py --out "$DATA" --train-size 20000

# The full-backfill reference: the new CNN trained alone.
dmu-migrate train "$DATA/train.parquet" --name fmnist-independent --method independent "${COMMON[@]}"
# BCT (uniform inheritance, no adapter) and DMU (selective inheritance + adapter).
dmu-migrate train "$DATA/train.parquet" --name fmnist-bct --method bct "${COMMON[@]}"
dmu-migrate train "$DATA/train.parquet" --name fmnist-dmu --method dmu "${COMMON[@]}"
for m in bct dmu; do
  dmu-migrate evaluate "$DATA/eval.parquet" --adapter "$OUT/fmnist-$m" \
    --reference "$OUT/fmnist-independent" --plot "fmnist-$m.png"
done
