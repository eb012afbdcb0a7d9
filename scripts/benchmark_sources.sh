#!/usr/bin/env bash
# Run `vtl benchmark` with one sources file over several target workspaces, then print each
# workspace's ranking and negative-transfer flags side by side.
#
#   scripts/benchmark_sources.sh configs/sources.yaml runs/ucf runs/hmdb -- --fractions 0.1,1.0 --seeds 2
#
# Everything after `--` is passed to every `vtl benchmark` call. Each workspace must be
# prepared and sampled (`vtl prepare`, `vtl sample`). A re-run resumes: finished cells are
# not recomputed. Stops at the first workspace that fails (set KEEP_GOING=1 to go on).
set -euo pipefail

usage() {
    cat >&2 <<'EOF'
usage: scripts/benchmark_sources.sh SOURCES.yaml WORKSPACE [WORKSPACE ...] [-- VTL_BENCHMARK_OPTIONS ...]

Runs `vtl benchmark WORKSPACE --sources SOURCES.yaml [OPTIONS]` for every WORKSPACE and prints
a summary: each workspace's best source, its top-1 and the negative-transfer flags.

  SOURCES.yaml   sources file (see configs/sources.yaml and docs/benchmark.md)
  WORKSPACE      a workspace folder prepared and sampled by `vtl prepare` / `vtl sample`
  OPTIONS        e.g. --strategies linear,finetune --fractions 0.1,0.25,1.0 --seeds 3 --max-parallel 2

Environment: VTL (default: vtl) is the command to run; KEEP_GOING=1 goes on after a failure.
EOF
    exit 2
}

[[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]] && usage
[[ $# -lt 2 ]] && usage

sources=$1
shift
[[ -f "$sources" ]] || { echo "error: sources file $sources does not exist" >&2; exit 2; }

workspaces=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
    workspaces+=("$1")
    shift
done
[[ $# -gt 0 && "$1" == "--" ]] && shift
options=("$@")
[[ ${#workspaces[@]} -gt 0 ]] || usage

read -r -a vtl <<< "${VTL:-vtl}"
failed=()
# Check every workspace before the first (long) benchmark starts.
for ws in "${workspaces[@]}"; do
    if [[ ! -f "$ws/manifest.csv" ]]; then
        echo "error: $ws is not a prepared workspace (run vtl prepare / vtl sample first)" >&2
        failed+=("$ws")
    fi
done
if [[ ${#failed[@]} -gt 0 && "${KEEP_GOING:-0}" != 1 ]]; then
    exit 2
fi

for ws in "${workspaces[@]}"; do
    [[ -f "$ws/manifest.csv" ]] || continue
    echo "=== $ws" >&2
    if ! "${vtl[@]}" benchmark "$ws" --sources "$sources" ${options[@]+"${options[@]}"}; then
        failed+=("$ws")
        [[ "${KEEP_GOING:-0}" == 1 ]] || { echo "error: vtl benchmark failed on $ws" >&2; exit 1; }
    fi
done

echo
echo "workspace | best source (strategy) | top-1 | negative-transfer flags"
for ws in "${workspaces[@]}"; do
    report="$ws/benchmark/report.md"
    [[ -f "$report" ]] || { echo "$ws | (no report) | | "; continue; }
    # The first row of the ranking table: | 1 | source | backbone | strategy | top-1 ± spread | ...
    best=$(awk -F' *\\| *' '/^\| 1 \|/ {print $3 " (" $5 ") | " $6; exit}' "$report")
    flags=$(grep -c '^- \*\*NEGATIVE TRANSFER\*\*' "$report" || true)
    echo "$ws | ${best:-?} | $flags"
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
