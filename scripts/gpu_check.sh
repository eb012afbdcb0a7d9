#!/usr/bin/env bash
# GPU readiness check: one prepared script for the day a GPU is lent (docs/performance.md,
# "When a GPU is lent"). Runs, each step in its own process under a time limit, and prints ratios:
#
#   env      torch/CUDA/GPU, nvidia-smi
#   data     synthetic videos -> vtl prepare -> vtl sample (the pipeline's own code): a real workspace
#   amp      bf16 autocast vs fp32 training clips/s, r2plus1d_18 at 16x112^2, random init
#   ddp      torchrun --standalone --nproc_per_node 1 -m pipeline train ... (nccl) must finish
#   extract  feature extraction clips/s (frozen backbone, torch.inference_mode), and through the loader
#   loader   bench_loader.py on the workspace's clips vs the training rate the amp step measured
#
#   scripts/gpu_check.sh              # on a GPU machine: about 3-5 minutes, no internet needed
#   scripts/gpu_check.sh --dry-run    # the same steps on CPU at tiny sizes (r2plus1d_18 at 2x32^2, gloo)
#
# Results: summary.md, summary.json and gpu_check.log in $OUT if set, else ./gpu_check_out.
# Python: $PYTHON, else .venv/bin/python, else python3; it needs torch, torchvision, av (PyAV),
# click, yaml, numpy and tqdm (not decord nor pytorchvideo).
# Exit code: 0 when every step passed, 1 when one failed (the others still ran), 3 when Python
# or its packages are missing.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=gpu
KEEP=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) MODE=dry ;;
    --keep) KEEP=1 ;;  # keep the scratch folder (workspace, per-step JSON) and print its path
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x "$REPO/.venv/bin/python" ]]; then PY=$REPO/.venv/bin/python
else PY=$(command -v python3 || true)
fi
[[ -n "$PY" ]] || { echo "gpu_check: no python3 found (set PYTHON)" >&2; exit 3; }
# This checkout's pipeline package wins over any installed copy (and reaches torchrun's workers).
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 VTL_PROGRESS_INTERVAL=600
missing=$("$PY" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("torch", "torchvision", "av", "click", "yaml", "numpy", "tqdm")
               if importlib.util.find_spec(m) is None))
EOF
)
OUT_DIR=${OUT:-$REPO/gpu_check_out}
mkdir -p "$OUT_DIR"
if [[ -n "$missing" ]]; then
  msg="gpu_check: $PY lacks Python packages: $missing (install them, or carry wheels: docs/performance.md)"
  echo "$msg" >&2
  printf '# gpu_check (%s): not run\n\n%s\n' "$MODE" "$msg" >"$OUT_DIR/summary.md"
  exit 3
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
LOG=$OUT_DIR/gpu_check.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
tee_pid=$!
finish() {  # the scratch folder goes; the log is complete before the script returns
  [[ $KEEP == 1 ]] || rm -rf "$WORK"
  exec >&- 2>&-
  wait "$tee_pid" 2>/dev/null
}
trap finish EXIT

# Step time limits (seconds), about 3x what each step is expected to take; on a GPU they add up
# to 9 minutes, so even with steps hanging the script ends (and writes its summary) inside a
# 10-minute window. The dry run's are looser: 2 shared cores can be slow.
if [[ $MODE == gpu ]]; then LIMITS=(env=30 data=90 amp=100 ddp=120 extract=80 loader=120)
else LIMITS=(env=60 data=120 amp=120 ddp=180 extract=120 loader=120)
fi
limit() { local kv; for kv in "${LIMITS[@]}"; do [[ ${kv%%=*} == "$1" ]] && echo "${kv#*=}"; done; }

STATUS=()
run_step() {  # run_step NAME COMMAND...: its status goes into STATUS (ok / failed (rc N) / timed out)
  local name=$1; shift
  echo; echo "== $name ($(date +%T))"
  local t0=$SECONDS
  timeout --kill-after=15 "$(limit "$name")" "$@"
  local rc=$?
  case $rc in
    0) STATUS+=("$name=ok") ;;
    124|137) STATUS+=("$name=timed out after $(limit "$name") s") ;;
    *) STATUS+=("$name=failed (rc $rc)") ;;
  esac
  echo "-- $name: rc $rc, $((SECONDS - t0)) s"
}

helper=("$PY" "$REPO/scripts/gpu_check.py")
echo "gpu_check ($MODE) in $REPO with $PY; results to $OUT_DIR"
run_step env "${helper[@]}" env --plan "$MODE" --work "$WORK"
run_step data "${helper[@]}" data --plan "$MODE" --work "$WORK"
run_step amp "${helper[@]}" amp --plan "$MODE" --work "$WORK"

# DDP on one process: vtl joins the process group under torchrun even with one process, so this
# runs the DDP wrapper, DistributedSampler and the collectives on nccl (gloo in the dry run).
echo; echo "== ddp ($(date +%T))"
ddp_log=$WORK/ddp.log
if read -r -a train_args < <("${helper[@]}" train-args --plan "$MODE" --work "$WORK") && ((${#train_args[@]})); then
  t0=$SECONDS
  echo "torchrun --standalone --nproc_per_node 1 -m pipeline ${train_args[*]}"
  timeout --kill-after=15 "$(limit ddp)" "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 \
      -m pipeline "${train_args[@]}" 2>&1 | tee "$ddp_log"
  rc=${PIPESTATUS[0]}
  if "${helper[@]}" ddp --plan "$MODE" --work "$WORK" --log "$ddp_log" --rc "$rc" --seconds $((SECONDS - t0))
  then STATUS+=("ddp=ok")
  elif ((rc == 124 || rc == 137)); then STATUS+=("ddp=timed out after $(limit ddp) s")
  elif ((rc != 0)); then STATUS+=("ddp=failed (torchrun rc $rc)")
  else STATUS+=("ddp=failed (see its error)")
  fi
  echo "-- ddp: torchrun rc $rc, $((SECONDS - t0)) s"
else
  STATUS+=("ddp=not run (no workspace)")
fi

run_step extract "${helper[@]}" extract --plan "$MODE" --work "$WORK"
run_step loader "${helper[@]}" loader --plan "$MODE" --work "$WORK"

echo; echo "== summary"
status_arg=$(IFS=,; echo "${STATUS[*]}")
"${helper[@]}" summary --plan "$MODE" --work "$WORK" --out "$OUT_DIR" --status "$status_arg"
rc=$?
[[ $KEEP == 1 ]] && echo "scratch kept in $WORK"
echo "results: $OUT_DIR/summary.md, $OUT_DIR/summary.json, $LOG"
exit $rc
