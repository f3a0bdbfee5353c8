#!/usr/bin/env bash
# Reproduce the shipped property model force2geo-gap-xtb, the HOMO-LUMO gap head that
# `force2geo predict` uses by default, on top of the shipped potential that
# scripts/make_pretrained.sh makes (run that first: this script reads its store, split and
# exported weights):
#
#   1. dataset     one molecule per trajectory of the potential's store: ground truth = the
#                  GFN2-xTB minimum, early = the MMFF94 geometry the xTB relaxation starts
#                  from, target xtb_gap (eV); and the geometry the shipped potential reaches
#                  from that MMFF start (force2geo predict relaxes from the same kind of start)
#   2. experiment  on the potential's own scaffold split (no valid/test molecule was seen by
#                  the potential): (a) Force2Prop (paper §4.4): the potential's backbone with
#                  a new gap head, trained on xTB minima; (b) geometry fine-tuning (§2.4):
#                  (a) fine-tuned on noisy minima and MLIP relaxation frames, validated on
#                  MLIP-relaxed geometries, the input force2geo predict gives it
#   3. export      best.pt of (b) (one per seed in SEEDS: an ensemble) as NAME, kind property
#   4. check       force2geo predict builtin:demo with both shipped models
#
# Every step resumes (the dataset is built once; the experiment skips finished runs and
# resumes stopped ones; the export keeps unchanged files). Settings come from the
# environment, e.g.  SEEDS="0 1 2" EPOCHS=100 bash scripts/make_property_head.sh
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=${NAME:-force2geo-gap-xtb}
MLIP_NAME=${MLIP_NAME:-force2geo-painn-xtb}
DATA=${DATA:-data/pretrained}
SEEDS=${SEEDS:-0}
EPOCHS=${EPOCHS:-100}
FT_EPOCHS=${FT_EPOCHS:-50}
BATCH=${BATCH:-64}
MAX_MINUTES=${MAX_MINUTES:-120}         # per run
DEVICE=${DEVICE:-auto}
THREADS=${THREADS:-$(nproc)}
OUT=${OUT:-src/force2geo/pretrained/weights}
F2G=${F2G:-.venv/bin/force2geo}
PY=${PY:-.venv/bin/python}

STORE=$DATA/xtb
SPLIT=$DATA/split.json
DATASET=$DATA/gap-dataset
EXPERIMENT=$DATA/reports/$NAME
SPEC=$DATA/$NAME.yaml
export FORCE2GEO_WEIGHTS=$OUT

# the shipped potential's first weight file (SHA-256 checked against the registry)
MLIP_FILE=$("$PY" -c "from force2geo.pretrained.registry import model_files
print(model_files('$MLIP_NAME')[0])")
echo "+ potential: $MLIP_FILE" >&2

# 1. the property dataset with MLIP-relaxed geometries (built once)
if [ ! -f "$DATASET/meta.json" ]; then
    "$F2G" dataset build "$STORE" -o "$DATASET" --target xtb_gap --relax-with "$MLIP_FILE" \
        --start early --device "$DEVICE" --threads "$THREADS" --no-progress
fi
"$F2G" dataset info "$DATASET"

# 2. Force2Prop, then geometry fine-tuning, per seed, on the potential's own split
runs=""
rows=""
for seed in $SEEDS; do
    runs+="
  - {name: force2prop-seed$seed, init: $MLIP_FILE, seed: $seed}
  - {name: force2geo-seed$seed, init: \"run:force2prop-seed$seed\", geometry_finetune: true,
     eval_geometry: mlip, epochs: $FT_EPOCHS, seed: $seed}"
    rows+="\"Force2Prop, seed $seed (xTB minima)\": force2prop-seed$seed,
           \"+ geometry fine-tuning, seed $seed (MLIP geometries)\": force2geo-seed$seed, "
done
cat > "$SPEC" <<EOF
# written by scripts/make_property_head.sh
name: $NAME
description: >
  HOMO-LUMO gap (GFN2-xTB, eV) for force2geo predict: Force2Prop from $MLIP_NAME, then
  geometry fine-tuning on its relaxed geometries.
dataset: $DATASET
splits:
  mlip: {file: $SPLIT}
defaults: {target: xtb_gap, epochs: $EPOCHS, batch_size: $BATCH, lr: 0.0005,
           max_minutes: $MAX_MINUTES}
runs:$runs
tables:
  - title: "HOMO-LUMO gap MAE (eV) on the potential's held-out molecules"
    rows: {${rows%, }}
    metrics: [valid_mae, test_mae]
EOF
echo "+ $F2G experiment $SPEC -o $EXPERIMENT" >&2
"$F2G" experiment "$SPEC" -o "$EXPERIMENT" --device "$DEVICE" --threads "$THREADS"

# 3. export the geometry-fine-tuned models and register them (kind property)
RUNS=()
for seed in $SEEDS; do
    RUNS+=("$EXPERIMENT/runs/mlip/force2geo-seed$seed")
done
"$PY" -m force2geo.pretrained export "${RUNS[@]}" --name "$NAME" --folder "$OUT" \
    --level-of-theory "GFN2-xTB (tblite 0.8) HOMO-LUMO gap at the xTB minimum" \
    --description "PaiNN gap model for force2geo predict: the backbone of $MLIP_NAME \
fine-tuned on GFN2-xTB HOMO-LUMO gaps of its training molecules (Force2Prop), then on its \
relaxed geometries (geometry fine-tuning). Trained on xTB minima of small neutral organic \
molecules (H C N O F S Cl); knows nothing beyond GFN2-xTB. Errors: $EXPERIMENT/tables.md."

# 4. the one-command pipeline with both shipped models
"$F2G" predict builtin:demo -o "$DATA/reports/predict-demo/predictions.csv" --overwrite \
    --device "$DEVICE" --threads "$THREADS" --no-progress
ls -l "$OUT"
