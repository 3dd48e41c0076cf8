#!/usr/bin/env bash
# The WordNet text-embedding upgrade, end to end. Run from the repository root.
#   old model: paraphrase-MiniLM-L3-v2   new backbone: all-MiniLM-L6-v2 (+ a trained head)
set -euo pipefail
DATA=${DATA:-data/wordnet_text}
OUT=${OUT:-adapters}
# Every training setting is the default: the upgrade nobody tuned for.
COMMON=(--out-dir "$OUT" --overwrite)

python examples/wordnet_text/prepare.py --out "$DATA" --train-synsets 2500

# The full-backfill reference: the new model trained alone (no compatibility).
dmu-migrate train "$DATA/train.parquet" --name wordnet-independent --method independent "${COMMON[@]}"
# DMU: selective backward compatibility plus the forward adapter psi.
dmu-migrate train "$DATA/train.parquet" --name wordnet-dmu --method dmu "${COMMON[@]}"
dmu-migrate evaluate "$DATA/eval.parquet" --adapter "$OUT/wordnet-dmu" \
  --reference "$OUT/wordnet-independent" --plot wordnet-dmu.png

# Adapter only: the off-the-shelf all-MiniLM-L6-v2 (column 'new') stays as it is and
# only psi is fitted, old -> new; evaluate reads the new embeddings from column 'new'.
dmu-migrate train "$DATA/train.parquet" --name wordnet-affine --method adapter \
  --adapter-kind affine --out-dir "$OUT" --overwrite
dmu-migrate evaluate "$DATA/eval.parquet" --adapter "$OUT/wordnet-affine"

# Serving. The application's collection: the test lemma texts with their old-model (L3)
# vectors, 'words__v1' behind the alias 'words' that its queries use.
rm -rf "$DATA/words.db"
python examples/wordnet_text/old_index.py --table "$DATA/eval.parquet" --uri "$DATA/words.db"
# On WordNet the quality gate refuses the evolved gallery (new->evolved below old->old,
# docs/results.md), so evolve would exit 6; --accept-regression goes on anyway, here only
# to show the serving path. The transition artifacts are what beats old->old on WordNet.
dmu-migrate evolve --collection words --adapter "$OUT/wordnet-dmu" --uri "$DATA/words.db" --accept-regression
# A query: text -> all-MiniLM-L6-v2 -> new_model.onnx -> search the alias (now 'words__v2').
python examples/wordnet_text/serve.py --uri "$DATA/words.db" --alias words \
  --adapter "$OUT/wordnet-dmu" "a motor vehicle with four wheels"
