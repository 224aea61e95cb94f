#!/usr/bin/env bash
# One lease of a GPU machine, in one or two calls: the checks of issue 11 that need CUDA, each
# under its own time limit so that a failing or slow step does not cost the others. Run from
# the repository root with the MNIST files in ./data/mnist (git-ignored) and the project on
# PYTHONPATH (the device machine has torch but no install of poisoncert):
#
#   OUT=/tmp/gpu BUDGET=540 bash benchmarks/gpu_session.sh            # every step
#   OUT=/tmp/gpu STEPS="e2e_mnist_ns30" NS30_PATH=bmm bash benchmarks/gpu_session.sh
#
# STEPS picks steps (default: cuda_tests e2e_mnist17 throughput e2e_mnist_ns30 inference
# profile; also probe_layouts and cprofile_mnist17, measured in session 6; they run in the
# order below, the acceptance figures before the diagnostics; at most 7 of them, so that $OUT
# holds at most 8 files);
# CUDA_K the CUDA tests' pytest -k expression (default "cuda"; e.g. "cuda and graphed");
# MNIST17_DTYPES and MNIST17_PATHS the MNIST 1/7 runs (default float32,bfloat16 x fast,bmm:
# fast is cmajor for LeNet-5 on CUDA); PROFILE_ONLY a filter of profile_gpu.py's cases
# (one that names none is refused before anything runs), PROFILE_DTYPES their precisions
# (default float32) and PROFILE_GROUP their group size (default: each case's), e.g. the
# improved learner's fastest measured run: PROFILE_ONLY="cnn_small + warps, cmajor"
# PROFILE_DTYPES=bfloat16 PROFILE_GROUP=1000;
# NS30_PATH the training.path of the improved learner's run (default auto: the fastest of
# twin, bmm and cmajor for cnn_small with warps, float32, as the throughput step measured
# them: benchmarks/gpu_pick_path.py), NS30_DTYPES its precisions (default float32),
# NS30_GROUPS and MNIST17_GROUPS the group sizes of the end-to-end runs (default: the
# config's, auto; e.g. "auto,500,1000");
# THROUGHPUT_ONLY the throughput table's cases (default: MNIST 1/7's and the improved
# learner's shapes of work on every path, and ResNet-18's grouped twin beside its cmajor form,
# the twin with cuDNN free of the engine's deterministic heuristics (a diagnostic) and the
# graphed per-model loop with 8, 1 and 4 lanes: the CIFAR-10 experiment's candidates; "" for
# all).
#
# DRY=1 runs every step on the CPU with the tools' tiny settings (--device cpu --quick, the
# digits runs for the end-to-end steps, float32): a check of this script's wiring before a
# lease spends device time on it (tests/test_engine.py runs it).
#
# Each step's log goes to $OUT (at most 8 files: what one call brings back), bench_gpu's JSON
# to $JSON (default /tmp/gpu_json; the logs hold its rows); the last lines printed are a
# summary table. Exits 0 when every step that ran returned 0, else 1 (each step's status is
# in the summary).
set -uo pipefail
if (( $# )); then  # settings are environment variables; an argument is a mistake or --help
  case $1 in
    -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "gpu_session.sh: takes no arguments, got '$1' (its settings are environment" \
            "variables: bash benchmarks/gpu_session.sh --help)" >&2; exit 2 ;;
  esac
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export POISONCERT_DATA="$PWD/data"
OUT="${OUT:-/tmp/gpu}"
JSON="${JSON:-/tmp/gpu_json}"  # bench_gpu's JSON (the logs hold its rows)
BUDGET="${BUDGET:-540}"
STEPS="${STEPS:-cuda_tests e2e_mnist17 throughput e2e_mnist_ns30 inference profile}"
STEPS=$(echo $STEPS)  # one space between names
NS30_PATH="${NS30_PATH:-auto}"
DRY="${DRY:-}"
if [[ -n $DRY ]]; then  # the CPU, tiny settings
  DEV=(--device cpu --quick); E2E17=digits_cnn; E2E30=digits_cnn; F32=float32
else
  DEV=(); E2E17=mnist17; E2E30=mnist_ns30; F32=
fi
KNOWN="cuda_tests probe_layouts e2e_mnist17 throughput e2e_mnist_ns30 inference profile cprofile_mnist17"
for s in $STEPS; do
  if [[ " $KNOWN " != *" $s "* ]]; then
    echo "gpu_session.sh: STEPS: unknown step '$s' (one of: $KNOWN)" >&2; exit 2
  fi
done
if [[ -z $DRY ]]; then  # one line, before anything is written, where there is no GPU
  why=$(python3 -c "import torch; print('' if torch.cuda.is_available() else
        'no CUDA device is visible to torch')" 2>&1 | tail -n 1)
  if [[ -n $why ]]; then
    echo "gpu_session.sh: $why (DRY=1 runs every step on the CPU with tiny settings)" >&2
    exit 2
  fi
fi
mkdir -p "$OUT" "$JSON"
# each step's limit is multiplied by it: a dry run on a busy CPU (a test beside other work)
# must not fail a step for being slow, which is not what it checks
LIMIT_SCALE="${LIMIT_SCALE:-$([[ -n $DRY ]] && echo 4 || echo 1)}"
NS30_DTYPES="${NS30_DTYPES:-float32}"
NS30_GROUPS="${NS30_GROUPS:-}"
MNIST17_GROUPS="${MNIST17_GROUPS:-}"
MNIST17_DTYPES="${MNIST17_DTYPES:-${F32:-float32,bfloat16}}"
MNIST17_PATHS="${MNIST17_PATHS:-fast,bmm}"
PROFILE_ONLY="${PROFILE_ONLY:-}"
PROFILE_DTYPES="${PROFILE_DTYPES:-float32}"
PROFILE_GROUP="${PROFILE_GROUP:-}"
CUDA_K="${CUDA_K:-cuda}"
THROUGHPUT_ONLY="${THROUGHPUT_ONLY-sub-dataset rows 10,cnn_small + warps,resnet18 (twin),resnet18 (cmajor),cuDNN free,resnet18 (graphed}"
start=$(date +%s)
declare -a SUMMARY
FAILED=0  # the script's exit status: 1 where a step that ran did not return 0
left() { echo $(( BUDGET - ($(date +%s) - start) )); }
step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$(( $2 * LIMIT_SCALE )); shift 2
  [[ " $STEPS " == *" $name "* ]] || return 0
  local l; l=$(left)
  (( limit > l )) && limit=$l
  if (( limit < 15 )); then SUMMARY+=("$name | skipped (no time left)"); return; fi
  local t0; t0=$(date +%s)
  timeout --signal=INT --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  (( rc == 0 )) || FAILED=1
  SUMMARY+=("$name | rc $rc | $(( $(date +%s) - t0 )) s (limit $limit s)")
  echo "== $name rc=$rc"; tail -n 25 "$OUT/$name.log"
}
{ [[ -n $DRY ]] && echo "DRY: the CPU, tiny settings" || {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; }
  nproc; } 2>&1 | tee "$OUT/summary.txt"
step cuda_tests 120 python3 -m pytest -q -p no:cacheprovider tests/test_engine.py \
  tests/test_training.py -k "$CUDA_K"
# the bmm path's layout question (docs/benchmarks.md): one layer, four formulations
step probe_layouts 40 python3 benchmarks/probe_conv_layouts.py "${DEV[@]}"
step e2e_mnist17 150 python3 benchmarks/bench_gpu.py "${DEV[@]}" --no-throughput --e2e $E2E17 \
  --e2e-dtypes "$MNIST17_DTYPES" --e2e-paths "$MNIST17_PATHS" --e2e-groups "$MNIST17_GROUPS" \
  --json "$JSON/e2e_mnist17.json"
# the throughput table before the improved learner, whose path it picks: the cmajor rows
# beside bmm and the twins, and ResNet-18's cmajor form and graphed loop beside its grouped
# twin (a case that fails, out of memory for one, is a row saying so)
step throughput 240 python3 benchmarks/bench_gpu.py "${DEV[@]}" --e2e none --short \
  --only "$THROUGHPUT_ONLY" --json "$JSON/throughput.json"
if [[ $NS30_PATH == auto ]]; then
  NS30_PATH=$(python3 benchmarks/gpu_pick_path.py "$JSON/throughput.json" 2>/dev/null \
              || echo fast)
fi
echo "improved learner's path: $NS30_PATH" | tee -a "$OUT/summary.txt"
# the improved learner, before the diagnostic steps below (an acceptance figure); a line per
# trained group, so a step stopped at its limit leaves a rate
step e2e_mnist_ns30 230 python3 benchmarks/bench_gpu.py "${DEV[@]}" --no-throughput --e2e $E2E30 \
  --e2e-paths "$NS30_PATH" --e2e-dtypes "$NS30_DTYPES" --e2e-groups "$NS30_GROUPS" --progress
# predicting: 256 classifiers on 10,000 images per model, path and precision (a run's share
# after training; the improved learner predicts 10,000 test images with each of 1,000), and
# 16 ResNet-18s on 10,000 CIFAR-sized images on the twin and cmajor
step inference 90 python3 benchmarks/bench_gpu.py "${DEV[@]}" --no-throughput --e2e none \
  --inference
# where a step's time goes: kernels against steady wall time, kernels per step, the costliest
# ops (ResNet-18 in bfloat16 on the twin and cmajor too)
step profile 150 python3 benchmarks/profile_gpu.py "${DEV[@]}" --only "$PROFILE_ONLY" \
  --dtypes "$PROFILE_DTYPES" ${PROFILE_GROUP:+--group "$PROFILE_GROUP"}
# where an end-to-end run's host time goes (MNIST 1/7, the second of two runs, cProfile)
step cprofile_mnist17 45 python3 benchmarks/profile_gpu.py "${DEV[@]}" --e2e $E2E17
{ echo; echo "| step | result |"; echo "|---|---|"
  for s in "${SUMMARY[@]}"; do echo "| $s |"; done
  logs=()  # the logs of the steps that ran (a missing one made grep, so the script, exit 2)
  for f in "$OUT"/e2e_*.log "$OUT"/throughput.log "$OUT"/inference.log "$OUT"/profile.log; do
    [[ -f $f ]] && logs+=("$f")
  done
  if (( ${#logs[@]} )); then
    grep -h "^| " "${logs[@]}" | grep -v "^|---" | sort -u | head -100 || true
  fi; } | tee -a "$OUT/summary.txt"
exit "$FAILED"
