#!/usr/bin/env bash
# Reproduce the shipped model force2geo-painn-xtb from nothing but RDKit's bundled molecules:
#
#   1. generate  RDKit ETKDG -> MMFF94 -> GFN2-xTB relaxation trajectories (tblite), one
#                per molecule of the built-in sets (neutral, H C N O F S Cl, <= MAX_HEAVY
#                heavy atoms, deduplicated by InChIKey)
#   2. split     Bemis-Murcko scaffold split 80/10/10 by trajectory: no scaffold (so no
#                molecule) is in two parts (SPLIT_METHOD, FRACTIONS); with EXTEND (an
#                earlier split file, or a model card's *.inchikeys.txt) a random split that
#                keeps the earlier placement (every listed molecule in train)
#   3. train     PaiNN at the paper's size (hidden 128, 4 layers, 128 Gaussians, 4.5 Å) on
#                the GFN2-xTB snapshots only (the MMFF stages carry MMFF94 labels), EMA
#                weights; one run per seed in SEEDS (several seeds: an ensemble); INIT
#                warm-starts every run from a checkpoint or exported model (use EXTEND with
#                its InChIKey list so that no valid/test molecule was trained on), and
#                MAX_MINUTES caps each run's training time
#   4. export    float32 inference weights, SHA-256 registered, into the package's weights
#                folder (OUT)
#   5. evaluate  the exported model relaxes the test molecules from their MMFF geometry;
#                GFN2-xTB single points score it (pct_T, pct_success, pct_div, pct_FWT)
#   6. card      MODEL_CARD.md from facts read off the files, the store, test-set errors
#                and the evaluation
#
# Every step resumes: rerun the script after a kill and it goes on (generate skips stored
# molecules, train resumes last.pt, evaluate reuses its per-molecule caches). It takes
# hours to days on a 2-core CPU (generate ~2-4 s per molecule per worker; training ~3-6 s
# per batch of 64); a GPU shortens step 3 (DEVICE=cuda). Settings come from the
# environment, e.g.  SEEDS="0 1 2" EPOCHS=50 bash scripts/make_pretrained.sh
# The data (data/ is git-ignored) stays under DATA; only OUT's few-MB files are shipped.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=${NAME:-force2geo-painn-xtb}
DATA=${DATA:-data/pretrained}
INPUTS=${INPUTS:-builtin:all}          # .smi files and/or builtin:SET, space-separated
MAX_HEAVY=${MAX_HEAVY:-20}
WORKERS=${WORKERS:-$(nproc)}
SEEDS=${SEEDS:-0}
EPOCHS=${EPOCHS:-30}
BATCH=${BATCH:-64}
LR=${LR:-1e-3}
EMA=${EMA:-0.999}
EXTEND=${EXTEND:-}                     # earlier split .json or InChIKey list (random split)
SPLIT_METHOD=${SPLIT_METHOD:-$([ -n "$EXTEND" ] && echo random || echo scaffold)}
FRACTIONS=${FRACTIONS:-0.8 0.1 0.1}
INIT=${INIT:-}                         # warm start: checkpoint or exported model file
MAX_MINUTES=${MAX_MINUTES:-}           # cap on each run's training minutes
GENERATE=${GENERATE:-1}                # 0: train on STORE as it is
DEVICE=${DEVICE:-auto}
THREADS=${THREADS:-$(nproc)}
EVAL_K=${EVAL_K:-100}
OUT=${OUT:-src/force2geo/pretrained/weights}
F2G=${F2G:-.venv/bin/force2geo}
PY=${PY:-.venv/bin/python}

STORE=$DATA/xtb
SPLIT=$DATA/split.json
REPORT=$DATA/reports/$NAME
mkdir -p "$DATA/runs" "$DATA/reports"
export FORCE2GEO_WEIGHTS=$OUT           # where --model NAME finds the exported model
COMMANDS=("NAME=$NAME DATA=$DATA INPUTS='$INPUTS' MAX_HEAVY=$MAX_HEAVY SEEDS='$SEEDS' \
EPOCHS=$EPOCHS BATCH=$BATCH LR=$LR EMA=$EMA SPLIT_METHOD=$SPLIT_METHOD FRACTIONS='$FRACTIONS' \
EXTEND=$EXTEND INIT=$INIT MAX_MINUTES=$MAX_MINUTES GENERATE=$GENERATE EVAL_K=$EVAL_K \
bash scripts/make_pretrained.sh  # runs:")
record() {  # remember a command for the model card, quoted as the shell needs it
    local line="" arg
    for arg in "$@"; do
        arg=${arg#.venv/bin/}
        if [[ ! $arg =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
            arg="'${arg//\'/\'\\\'\'}'"
        fi
        line+="${line:+ }$arg"
    done
    COMMANDS+=("$line")
}
run() {
    echo "+ $*" >&2
    record "$@"
    "$@"
}

# 1. generate (resumable; several inputs append to the same store). Skipped once the split
#    exists (the store is frozen from then on), or with GENERATE=0 (use STORE as it is, e.g.
#    a generate run stopped early; its generate.json records how it was made).
if [ "$GENERATE" = 1 ] && [ ! -f "$SPLIT" ]; then
    for input in $INPUTS; do
        run "$F2G" generate "$input" -o "$STORE" --max-heavy "$MAX_HEAVY" \
            --workers "$WORKERS" --no-progress
    done
else
    COMMANDS+=("# $STORE: made earlier by force2geo generate (see $STORE/generate.json)")
fi
"$F2G" info "$STORE"

# 2. split (made once: the store must not change after this)
read -r -a fractions <<< "$FRACTIONS"
split=("$F2G" split "$STORE" --method "$SPLIT_METHOD" --fractions "${fractions[@]}" -o "$SPLIT")
[ -z "$EXTEND" ] || split+=(--extend "$EXTEND")
record "${split[@]}"
[ -f "$SPLIT" ] || "${split[@]}"

# 3. train, one run per seed (resumed when last.pt exists)
RUNS=()
for seed in $SEEDS; do
    RUN=$DATA/runs/$NAME-seed$seed
    RUNS+=("$RUN")
    train=("$F2G" train --data "$STORE" --split "$SPLIT" --stages xtb -o "$RUN"
           --model painn --epochs "$EPOCHS" --batch-size "$BATCH" --lr "$LR"
           --ema-decay "$EMA" --seed "$seed" --dtype float32 --device "$DEVICE"
           --threads "$THREADS" --ckpt-every 100)
    [ -z "$INIT" ] || train+=(--init "$INIT")
    [ -z "$MAX_MINUTES" ] || train+=(--max-minutes "$MAX_MINUTES")
    record "${train[@]}"
    if grep -qs '"kind": *"final"' "$RUN/metrics.jsonl"; then
        echo "$RUN finished earlier; not training it again" >&2
    elif [ -f "$RUN/last.pt" ]; then  # resume an interrupted run
        resume=("$F2G" train -o "$RUN" --resume --epochs "$EPOCHS" --device "$DEVICE"
                --threads "$THREADS")
        [ -z "$MAX_MINUTES" ] || resume+=(--max-minutes "$MAX_MINUTES")
        "${resume[@]}"
    else
        "${train[@]}"
    fi
done

# 4. export the best checkpoint of each run (EMA weights) and register them
run "$PY" -m force2geo.pretrained export "${RUNS[@]}" --name "$NAME" --folder "$OUT" \
    --level-of-theory "GFN2-xTB (tblite 0.8), labels of xTB relaxation trajectories" \
    --description "${DESCRIPTION:-PaiNN (paper size) trained on GFN2-xTB energies and forces \
of relaxation trajectories of the molecules of $INPUTS (builtin:all: the NCI and WEHI sets \
bundled with RDKit), neutral, H C N O F S Cl, at most $MAX_HEAVY heavy atoms. It relaxes \
small organic molecules towards GFN2-xTB minima and knows nothing beyond GFN2-xTB.}"

# 5. evaluate the exported model on the test part (resumes from its caches)
run "$F2G" evaluate relax --model "$NAME" --data "$STORE" --split "$SPLIT:test" \
    --k "$EVAL_K" --oracle xtb --stage xtb --device "$DEVICE" --threads 1 -o "$REPORT" \
    --no-progress

# 6. the model card (with the errors of the exported model on the test part)
card_args=()
for command in "${COMMANDS[@]}"; do
    card_args+=(--command "$command")
done
"$PY" -m force2geo.pretrained card --name "$NAME" --folder "$OUT" --evaluation "$REPORT" \
    "${card_args[@]}"
ls -l "$OUT"
