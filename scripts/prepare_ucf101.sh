#!/usr/bin/env bash
# Prepare UCF101 for vtl: check/extract the downloaded archives, then `vtl prepare` + `vtl sample`.
#
#   scripts/prepare_ucf101.sh DATA_DIR WORKSPACE [FOLD]
#
# DATA_DIR must hold (downloading is yours, from the UCF CRCV website's UCF101 page):
#   UCF-101/<Class>/v_<Class>_gXX_cYY.avi   or   UCF101.rar (extracted here with unrar or 7z)
#   ucfTrainTestlist/                       or   UCF101TrainTestSplits-RecognitionTask.zip (unzipped here)
# Env: VTL (default: vtl), FRAMES (16), SHORT_SIDE (128), CLIPS (3), WORKERS (min(4, CPUs)).
set -euo pipefail

# shellcheck source=scripts/_prepare_common.sh
source "$(dirname "$0")/_prepare_common.sh"

parse_fold_args "$@"

ROOT=$DATA_DIR/UCF-101
SPLITS=$DATA_DIR/ucfTrainTestlist
missing=()
[[ -d $ROOT || -f $DATA_DIR/UCF101.rar ]] ||
    missing+=("the videos: UCF101.rar (UCF101 from the UCF CRCV website), saved as $DATA_DIR/UCF101.rar or extracted to $ROOT/")
[[ -d $SPLITS || -f $DATA_DIR/UCF101TrainTestSplits-RecognitionTask.zip ]] ||
    missing+=("the official splits: UCF101TrainTestSplits-RecognitionTask.zip (\"Train/Test Splits for Action Recognition\" on the same UCF CRCV UCF101 page), saved as $DATA_DIR/UCF101TrainTestSplits-RecognitionTask.zip or extracted to $SPLITS/")
if ((${#missing[@]})); then
    echo "error: $DATA_DIR does not hold the UCF101 files vtl needs. Download and put there:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi

if [[ ! -d $ROOT ]]; then
    echo "extracting $DATA_DIR/UCF101.rar ..."
    extract_rar "$DATA_DIR/UCF101.rar" "$DATA_DIR"
    [[ -d $ROOT ]] || die "$DATA_DIR/UCF101.rar did not unpack to $ROOT/"
fi
if [[ ! -d $SPLITS ]]; then
    echo "extracting $DATA_DIR/UCF101TrainTestSplits-RecognitionTask.zip ..."
    extract_zip "$DATA_DIR/UCF101TrainTestSplits-RecognitionTask.zip" "$DATA_DIR"
    [[ -d $SPLITS ]] || die "the splits zip did not unpack to $SPLITS/"
fi

prepare_and_sample --format ucf101 --root "$ROOT" --splits "$SPLITS" --fold "$FOLD"
