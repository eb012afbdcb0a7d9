# Shared by scripts/prepare_*.sh (sourced, not run): errors, defaults, archive extraction.
# Env: VTL (default: vtl), FRAMES (16), SHORT_SIDE (128), CLIPS (3), WORKERS (min(4, CPUs)).

die() {
    echo "error: $*" >&2
    exit 1
}

fold_usage() {
    echo "usage: $(basename "$0") DATA_DIR WORKSPACE [FOLD]   (FOLD: 1, 2 or 3; default 1)" >&2
    exit 2
}

# DATA_DIR WORKSPACE [FOLD] of the datasets with official folds (UCF101, HMDB51).
parse_fold_args() {
    [[ $# -ge 2 && $# -le 3 ]] || fold_usage
    DATA_DIR=$1
    WORKSPACE=$2
    FOLD=${3:-1}
    [[ $FOLD =~ ^[123]$ ]] || fold_usage
    [[ -d $DATA_DIR ]] || die "DATA_DIR '$DATA_DIR' is not a folder"
}

VTL=${VTL:-vtl}
FRAMES=${FRAMES:-16}
SHORT_SIDE=${SHORT_SIDE:-128}
CLIPS=${CLIPS:-3}
NCPU=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
WORKERS=${WORKERS:-$((NCPU < 4 ? NCPU : 4))}

extract_rar() { # archive dest
    if command -v unrar >/dev/null 2>&1; then
        unrar x -o+ -idq "$1" "$2/"
    elif command -v 7z >/dev/null 2>&1; then
        7z x -y -o"$2" "$1" >/dev/null
    else
        die "cannot extract $1: install unrar or 7z (p7zip), or extract it yourself into $2"
    fi
}

extract_zip() { # archive dest
    if command -v unzip >/dev/null 2>&1; then
        unzip -q -o "$1" -d "$2"
    elif command -v python3 >/dev/null 2>&1; then
        python3 -m zipfile -e "$1" "$2"
    else
        die "cannot extract $1: install unzip, or extract it yourself into $2"
    fi
}

prepare_and_sample() { # vtl-prepare-args...: `vtl prepare WORKSPACE ARGS`, then `vtl sample` with the defaults
    command -v "$VTL" >/dev/null 2>&1 || die "'$VTL' not found: install vtl or set VTL=/path/to/vtl"
    set -x
    "$VTL" prepare "$WORKSPACE" "$@" --workers "$WORKERS"
    "$VTL" sample "$WORKSPACE" --frames "$FRAMES" --sampling uniform --short-side "$SHORT_SIDE" \
        --clips-per-video "$CLIPS" --workers "$WORKERS"
}
