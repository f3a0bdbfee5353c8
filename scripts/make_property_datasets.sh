#!/usr/bin/env bash
# Make the property datasets the specs in experiments/ read (paper §4.3, A.5), from a
# GFN2-xTB trajectory store of `force2geo generate` (or scripts/make_pretrained.sh):
#
#   DATA/xtb-gap-base  per molecule the ground truth (the xTB minimum), the early-stage
#                      geometry (the first xTB frame: the MMFF94 minimum), an RDKit ETKDG
#                      conformer, and the GFN2-xTB HOMO-LUMO gap etc. at the minimum (eV)
#   DATA/xtb-gap       + every molecule relaxed by the MLIP from its early-stage geometry,
#                      KEEP_FRAMES frames of each trajectory kept (geometry fine-tuning
#                      draws its inputs from them; Tables 4, 6, 7, 9, 11 and Fig. 5)
#   DATA/xtb-gap-2d    + every molecule relaxed by the MLIP from its RDKit conformer, first
#                      and last frames kept (the 2D-only setting, Table 12)
#
# Every molecule is relaxed (train, valid and test), so each spec can pick its split. The
# relaxations are batched BFGS (fmax 0.05 eV/Å, <= 500 steps); on a 2-core CPU they run at
# about 1-3 molecules/s, on a GPU (DEVICE=cuda, BATCH_ATOMS=32768) in minutes. Finished
# datasets are kept: rerun after a kill and it goes on with the next one.
#   STORE=data/xtb MODEL=force2geo-painn-xtb bash scripts/make_property_datasets.sh
set -euo pipefail
cd "$(dirname "$0")/.."

STORE=${STORE:-data/xtb}
DATA=${DATA:-data/property}
TARGET=${TARGET:-gap}
MODEL=${MODEL:-force2geo-painn-xtb}     # shipped name, checkpoint, or exported model
KEEP_FRAMES=${KEEP_FRAMES:-8}
DEVICE=${DEVICE:-auto}
BATCH_ATOMS=${BATCH_ATOMS:-4096}
THREADS=${THREADS:-1}
F2G=${F2G:-.venv/bin/force2geo}

BASE=$DATA/xtb-gap-base
if [ ! -e "$BASE/meta.json" ]; then
    $F2G dataset build "$STORE" -o "$BASE" --target "$TARGET" --threads "$THREADS" \
        --no-progress
fi

relaxed() {  # relaxed NAME START KEEP: a copy of BASE with every molecule MLIP-relaxed
    local name=$1 start=$2 keep=$3 tmp="$DATA/.$1.partial"
    if [ -e "$DATA/$name/meta.json" ]; then
        echo "$DATA/$name exists; kept"
        return
    fi
    rm -rf "$tmp"
    cp -a "$BASE" "$tmp"
    $F2G dataset relax "$tmp" --model "$MODEL" --start "$start" --keep-frames "$keep" \
        --device "$DEVICE" --batch-atoms "$BATCH_ATOMS" --threads "$THREADS" --no-progress
    mv "$tmp" "$DATA/$name"
    $F2G dataset info "$DATA/$name"
}

relaxed xtb-gap early "$KEEP_FRAMES"
relaxed xtb-gap-2d rdkit 2
