#!/usr/bin/env bash
# Prepare HMDB51 for vtl: check/extract the downloaded archives, then `vtl prepare` + `vtl sample`.
#
#   scripts/prepare_hmdb51.sh DATA_DIR WORKSPACE [FOLD]
#
# DATA_DIR must hold (downloading is yours, from the Serre lab's HMDB51 page at Brown University):
#   hmdb51_org.rar (one .rar per class inside; both levels are extracted here with unrar or 7z)
#     or the extracted class folders: hmdb51/<class>/<video>.avi, or <class>/<video>.avi directly in DATA_DIR
#   testTrainMulti_7030_splits/   or   test_train_splits.rar (extracted here)
# Env: VTL (default: vtl), FRAMES (16), SHORT_SIDE (128), CLIPS (3), WORKERS (min(4, CPUs)).
set -euo pipefail

# shellcheck source=scripts/_prepare_common.sh
source "$(dirname "$0")/_prepare_common.sh"

parse_fold_args "$@"

has_class_dirs() { # folder: true if some subfolder holds .avi files
    [[ -d $1 ]] && [[ -n $(find "$1" -mindepth 2 -maxdepth 2 -iname '*.avi' -print -quit 2>/dev/null) ]]
}

ROOT=""
if has_class_dirs "$DATA_DIR/hmdb51"; then
    ROOT=$DATA_DIR/hmdb51
elif has_class_dirs "$DATA_DIR"; then
    ROOT=$DATA_DIR
fi
SPLITS=$DATA_DIR/testTrainMulti_7030_splits
missing=()
[[ -n $ROOT || -f $DATA_DIR/hmdb51_org.rar ]] ||
    missing+=("the videos: hmdb51_org.rar (HMDB51 from the Serre lab's HMDB51 page at Brown University), saved as $DATA_DIR/hmdb51_org.rar, or its class folders extracted to $DATA_DIR/hmdb51/<class>/")
[[ -d $SPLITS || -f $DATA_DIR/test_train_splits.rar ]] ||
    missing+=("the official three splits: test_train_splits.rar (same HMDB51 page), saved as $DATA_DIR/test_train_splits.rar or extracted to $SPLITS/")
if ((${#missing[@]})); then
    echo "error: $DATA_DIR does not hold the HMDB51 files vtl needs. Download and put there:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi

if [[ -z $ROOT ]]; then
    echo "extracting $DATA_DIR/hmdb51_org.rar ..."
    mkdir -p "$DATA_DIR/hmdb51_org" "$DATA_DIR/hmdb51"
    extract_rar "$DATA_DIR/hmdb51_org.rar" "$DATA_DIR/hmdb51_org"
    shopt -s nullglob
    class_rars=("$DATA_DIR"/hmdb51_org/*.rar "$DATA_DIR"/hmdb51_org/*/*.rar)
    shopt -u nullglob
    ((${#class_rars[@]})) || die "$DATA_DIR/hmdb51_org.rar held no per-class .rar archives"
    for r in "${class_rars[@]}"; do
        extract_rar "$r" "$DATA_DIR/hmdb51"
    done
    ROOT=$DATA_DIR/hmdb51
    has_class_dirs "$ROOT" || die "extracting the class archives left no <class>/*.avi under $ROOT/"
fi
if [[ ! -d $SPLITS ]]; then
    echo "extracting $DATA_DIR/test_train_splits.rar ..."
    extract_rar "$DATA_DIR/test_train_splits.rar" "$DATA_DIR"
    [[ -d $SPLITS ]] || die "test_train_splits.rar did not unpack to $SPLITS/"
fi

prepare_and_sample --format hmdb51 --root "$ROOT" --splits "$SPLITS" --fold "$FOLD"
