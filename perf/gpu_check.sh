#!/usr/bin/env bash
# One prepared GPU check: the full-size numbers (Qwen3-VL-8B + SAM3, random weights, offline), the FSDP launch test
# and the whole test suite on one CUDA GPU (H100/H200), in about 8 minutes. Each part has its own time limit, so one
# failure or hang does not lose the others; each part's Markdown goes to $OUT as it finishes.
#
#   bash perf/gpu_check.sh                      # on the GPU machine
#   bash perf/gpu_check.sh --dry-run            # every part on the CPU at test sizes (run before any GPU run)
#   bash perf/gpu_check.sh --parts train,suite  # a subset, e.g. a rerun after a fix
#
# Parts: segment (bench_segment.py, K = 6 and 2, batch 1 and 4), train (bench_train.py: stage 1 uncached and cached,
# stage 2 bf16 and 4-bit, peak GPU memory), fsdp (tests/test_train_loop.py -k fsdp), suite (all other tests).
# Files in $OUT (default ./gpu_check_out): machine.md, segment.md, train.md, fsdp.md, suite.md, gpu_check.md (all of
# them together) and logs.txt (every part's raw output).
#
# Environment: OUT; PYTHON (default python3); GPU_CHECK_WHEELS (default perf/gpu_wheels: wheels installed
# first into a private folder put ahead on PYTHONPATH, filled by perf/fetch_gpu_wheels.sh); GPU_CHECK_BUDGET_S
# (seconds for all parts, default 470: a part gets at most what is left, at least 60 s); GPU_CHECK_T_SEGMENT /
# _TRAIN / _FSDP / _SUITE (one part's cap in seconds; on the GPU 90, 200, 90 and 300, in the dry run 600 each).
# The suite runs serially (the distributed tests share a port); cut short, its table still lists what ran.

set -u -o pipefail

DRY=0
PARTS="segment train fsdp suite"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --parts) shift; PARTS=$(printf '%s' "${1:-}" | tr ',' ' ') ;;
    -h | --help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for part in $PARTS; do
  case "$part" in
    segment | train | fsdp | suite) ;;
    *) echo "error: unknown part '$part' (parts: segment, train, fsdp, suite)" >&2; exit 2 ;;
  esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
OUT=${OUT:-$REPO/gpu_check_out}
mkdir -p "$OUT"
WORK=$(mktemp -d)  # raw output and JUnit files: only a few files may come back from $OUT
trap 'rm -rf "$WORK"' EXIT
PY=${PYTHON:-python3}
LOG=$OUT/logs.txt
: >"$LOG"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-470}

if [ "$DRY" = 1 ]; then
  MODE="dry run (CPU, test-sized random models in bf16 as on the GPU; the numbers mean nothing)"
  export DETECTURE_BENCH_DTYPE=bfloat16
  SIZE=tiny
  SEGMENT_ARGS=(--k 2 --batch 1 2 --size 96 --new-tokens 2 --repeats 1)
  TRAIN_ARGS=(--image-size 160 --steps 1 --samples 2 --batch-size 1 --repeats 1 --same-process)
  SUITE_ARGS=(tests/test_rle.py)  # the full suite is the lead's CI run; this checks the pytest plumbing
  CAP_DEFAULT=600
else
  MODE="GPU (random full-size weights, bf16)"
  SIZE=8b
  SEGMENT_ARGS=(--k 6 2 --batch 1 4 --size 1008 --new-tokens 120 --repeats 3)
  TRAIN_ARGS=(--image-size 1008 --steps 10 --samples 8 --batch-size 2 --repeats 1 --threads 8)
  SUITE_ARGS=(tests -k "not (test_launch_on_gpus and fsdp)")  # the FSDP launch test ran as its own part
  CAP_DEFAULT=""
fi

# --- wheels the machine lacks or has in another version (pinned transformers, bitsandbytes, ...) ----------------------
WHEELS=${GPU_CHECK_WHEELS:-perf/gpu_wheels}
SETUP="no wheels installed (the machine's own packages)"
if [ "$DRY" = 0 ]; then
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    SITE=${GPU_CHECK_SITE:-/tmp/detecture_gpu_site}
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$WHEELS"/*.whl >>"$LOG" 2>&1; then
      export PYTHONPATH="$SITE:$PYTHONPATH"
      SETUP="installed $(compgen -G "$WHEELS/*.whl" | wc -l) wheels from $WHEELS into $SITE"
    else
      SETUP="wheel install FAILED (see logs.txt): the machine's own packages are used"
    fi
  else
    SETUP="WARNING: no wheels in $WHEELS (run perf/fetch_gpu_wheels.sh here first): the machine's own packages are used"
  fi
fi

# --- machine facts ---------------------------------------------------------------------------------------------------
SMI="$WORK/nvidia-smi.csv"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv >"$SMI" 2>>"$LOG"
  { echo "=== nvidia-smi"; nvidia-smi; } >>"$LOG" 2>&1
fi
{
  echo "## Machine"
  echo
  echo "Date: $(date -u +%Y-%m-%dT%H:%MZ). Mode: $MODE. Setup: $SETUP."
  echo
  "$PY" perf/gpu_check_report.py facts "$SMI" 2>>"$LOG" || echo "(facts failed: see logs.txt)"
  echo
} >"$OUT/machine.md"
cat "$OUT/machine.md"

# --- parts -----------------------------------------------------------------------------------------------------------
STATUS=()
FAILED=0

# run_part NAME TITLE CAP KIND CMD... : KIND "bench" (stdout is Markdown) or "pytest" (JUnit at $WORK/NAME.xml).
# On the GPU a part gets min(CAP, what is left of the budget), at least 60 s; SIGINT first, so pytest still writes
# its JUnit file and the benchmarks keep the rows they printed.
run_part() {
  local name=$1 title=$2 cap=$3 kind=$4
  shift 4
  local limit=$cap
  if [ "$DRY" = 0 ]; then
    local left=$((BUDGET - ($(date +%s) - START)))
    [ "$left" -lt "$limit" ] && limit=$left
    [ "$limit" -lt 60 ] && limit=60
  fi
  local t0 rc secs result
  t0=$(date +%s)
  echo "=== $name (limit ${limit} s): $*" >>"$LOG"
  timeout -s INT -k 30 "$limit" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
  rc=$?
  secs=$(($(date +%s) - t0))
  case $rc in
    0) result="ok" ;;
    124 | 137) result="TIMED OUT after ${limit} s" ;;
    *) result="FAILED (exit $rc)" ;;
  esac
  [ "$rc" = 0 ] || FAILED=1
  {
    echo "## $title"
    echo
    echo "Command: \`$(printf '%q ' "$@")\`"
    echo
    echo "Result: $result, ${secs} s."
    echo
    if [ "$kind" = pytest ]; then
      "$PY" perf/gpu_check_report.py pytest "$WORK/$name.xml" "$WORK/$name.out" 2>>"$LOG" ||
        echo "(no pytest table: see logs.txt)"
    else
      cat "$WORK/$name.out"
    fi
    if [ "$rc" != 0 ]; then
      echo
      echo "Last lines of output:"
      echo
      echo '```'
      if [ "$kind" = pytest ]; then tail -n 30 "$WORK/$name.out"; else tail -n 30 "$WORK/$name.err"; fi
      echo '```'
    fi
    echo
  } >"$OUT/$name.md"
  {
    cat "$WORK/$name.out"
    echo "--- stderr (last 300 lines)"
    tail -n 300 "$WORK/$name.err"
  } >>"$LOG"
  cat "$OUT/$name.md"
  STATUS+=("| $name | $result | $secs |")
}

cap() {  # cap PART DEFAULT_ON_GPU: the env override, else the dry-run or GPU default
  local var="GPU_CHECK_T_$1"
  echo "${!var:-${CAP_DEFAULT:-$2}}"
}

PYTEST=("$PY" -m pytest -v -p no:cacheprovider)
for part in $PARTS; do
  case "$part" in
    segment)
      run_part segment "Segment: bench_segment.py --full-size $SIZE" "$(cap SEGMENT 90)" bench \
        "$PY" perf/bench_segment.py --full-size "$SIZE" "${SEGMENT_ARGS[@]}" ;;
    train)
      run_part train "Train: bench_train.py --full-size $SIZE" "$(cap TRAIN 200)" bench \
        "$PY" perf/bench_train.py --full-size "$SIZE" \
        --modes "stage 1" "stage 1 cached" "stage 2" "stage 2 4-bit" "${TRAIN_ARGS[@]}" ;;
    fsdp)
      run_part fsdp "FSDP launch test (tests/test_train_loop.py -k fsdp)" "$(cap FSDP 90)" pytest \
        "${PYTEST[@]}" --junitxml="$WORK/fsdp.xml" tests/test_train_loop.py -k fsdp ;;
    suite)
      run_part suite "Test suite" "$(cap SUITE 300)" pytest \
        "${PYTEST[@]}" --junitxml="$WORK/suite.xml" "${SUITE_ARGS[@]}" ;;
  esac
done

SUMMARY=$(printf '%s\n' "## Parts" "" "| part | result | seconds |" "|---|---|---:|" "${STATUS[@]}" \
  "" "Total: $(($(date +%s) - START)) s.")
{
  echo "# Detecture GPU check"
  echo
  cat "$OUT/machine.md"
  for part in $PARTS; do cat "$OUT/$part.md"; done
  echo "$SUMMARY"
} >"$OUT/gpu_check.md"
echo "$SUMMARY"
exit "$FAILED"
