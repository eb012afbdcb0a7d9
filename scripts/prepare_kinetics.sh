#!/usr/bin/env bash
# Prepare Kinetics-400 for vtl: check the downloaded layout, then `vtl prepare` + `vtl sample`.
#
#   scripts/prepare_kinetics.sh DATA_DIR WORKSPACE
#
# DATA_DIR must hold (downloading is yours: the annotation CSVs from DeepMind's Kinetics page, the
# clips with a Kinetics downloader or a mirror such as the CVDF one):
#   kinetics400/{train,val,test}/...video files   (or the videos directly under kinetics400/)
#   kinetics400/annotations/{train,val,test}.csv  or  kinetics-400_{train,val,test}.csv in DATA_DIR
# Env: VTL (default: vtl), FRAMES (16), SHORT_SIDE (128), CLIPS (3), WORKERS (min(4, CPUs)).
set -euo pipefail

usage() {
    echo "usage: $(basename "$0") DATA_DIR WORKSPACE" >&2
    exit 2
}
# shellcheck source=scripts/_prepare_common.sh
source "$(dirname "$0")/_prepare_common.sh"

[[ $# -eq 2 ]] || usage
DATA_DIR=$1
WORKSPACE=$2
[[ -d $DATA_DIR ]] || die "DATA_DIR '$DATA_DIR' is not a folder"

ROOT=$DATA_DIR/kinetics400
ANN=$ROOT/annotations
missing=()
if [[ ! -d $ROOT ]] || [[ -z $(find -L "$ROOT" -path "$ANN" -prune -o -type f \( -iname '*.mp4' -o -iname '*.webm' \
    -o -iname '*.mkv' -o -iname '*.avi' \) -print -quit 2>/dev/null) ]]; then
    missing+=("the Kinetics-400 clips (.mp4/.webm/.mkv/.avi), in $ROOT/{train,val,test}/ (label subfolders optional) or directly under $ROOT/")
fi
if [[ ! -f $ANN/train.csv ]]; then
    if [[ -f $DATA_DIR/kinetics-400_train.csv ]]; then
        # vtl reads every *.csv of the --splits folder: gather the official ones in one folder.
        mkdir -p "$ANN"
        for s in train val test; do
            [[ -f $DATA_DIR/kinetics-400_$s.csv ]] && ln -sf "$(cd "$DATA_DIR" && pwd)/kinetics-400_$s.csv" "$ANN/$s.csv"
        done
    else
        missing+=("the Kinetics-400 annotation CSVs (kinetics-400_train.csv, kinetics-400_val.csv, kinetics-400_test.csv from DeepMind's Kinetics dataset page), saved in $DATA_DIR/ or as $ANN/{train,val,test}.csv")
    fi
fi
if ((${#missing[@]})); then
    echo "error: $DATA_DIR does not hold the Kinetics-400 files vtl needs. Download and put there:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi

prepare_and_sample --format kinetics --root "$ROOT" --splits "$ANN"
