#!/usr/bin/env bash
# Every GPU measurement in one run (about 12-14 minutes on an H200), tables to $OUT (default ./bench_out).
#   bash bench/gpu_all.sh                           # all steps
#   bash bench/gpu_all.sh switches restore_compile  # only these steps (names below), in this file's order:
#                                                   # issue 22's measurement, under 7 minutes with its limits
#   TINY=1 bash bench/gpu_all.sh switches restore_compile  # dry run on a CPU at the tiny geometry
# Needs spandrel and facenet-pytorch; where missing they are installed from wheels in .whl/
# (see bench/README.md). Each step has its own time limit so one slow step cannot eat the rest.
set -uo pipefail
OUT=${OUT:-./bench_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# TINY=1: every step on the CPU at the tiny geometry (the code paths, not the timings).
# The step limits fit a GPU lease; a shared CPU runs the dry run several times slower (LIMIT_SCALE).
# A dry run times one round (its timings mean nothing).
if [[ -n ${TINY:-} ]]; then DEV="--device cpu --tiny"; SUITE="--suite matrix"; SCALE=${LIMIT_SCALE:-8}; ROUNDS=(--rounds 1)
else DEV="--device cuda"; SUITE=""; SCALE=${LIMIT_SCALE:-1}; ROUNDS=(); fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv || echo "no nvidia-smi"
  $PY -c "import torch, spandrel; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'spandrel', spandrel.__version__, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU')"
} 2>&1 | tee "$OUT/gpu.txt"
WANT=" ${*:-model_forward pipeline compile switches restore_compile} "
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$(($2 * SCALE)); shift 2
  [[ $WANT == *" $name "* ]] || return 0
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@" "${ROUNDS[@]}" 2>&1 | tee "$OUT/$name.log"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
}
# 1. Forward pass: fp32 / bf16 / fp16, batch 1 and 8, errors against spandrel's strict fp32 output.
step model_forward 170 $PY -m bench.model_forward $DEV $SUITE --batches 1 8 --rounds 8 --no-ranges --out "$OUT/tables.md"
# 2. Pipeline: group photo + 32 video frames, ours against the facexlib-style loop (fp32, bf16 autocast,
#    bf16 weights; fp16 left out to fit the lease).
step pipeline 170 $PY -m bench.pipeline $DEV --precisions fp32 bf16 --frames 32 --rounds 2 --out "$OUT/tables.md"
# 3. torch.compile (inductor, default mode) of the bf16-weights model (weight_dtype bf16), batch 8:
#    NCHW (today's Compile node path), channels-last input only (a change the node could make
#    without touching the shared network), channels-last weights and input (an earlier build:
#    4.51x). Compiling takes ~80 s each on an H200.
step compile 330 $PY -m bench.model_forward $DEV $SUITE --batches 8 --rounds 10 --compile --only "ours bf16 weights cast (no autocast)" "ours bf16 weights cast, torch.compile(default)" "ours bf16 weights cast, channels-last input, torch.compile(default)" "ours bf16 weights cast, channels-last, torch.compile(default)" --no-ranges --out "$OUT/tables.md"
# 4. Issue 22's switches on the bf16-weights network without torch.compile, batch 8: channels-last
#    weights and maps, CUDA graphs (one graph per batch size), fused GroupNorm+SiLU (a compiled
#    two-op kernel, runtime/fast.py FUSED_NORM_SILU), and all three together; errors against
#    spandrel's strict fp32 output, the fp32 reference check of the table.
step switches 150 $PY -m bench.model_forward $DEV $SUITE --batches 8 --rounds 10 --only "ours bf16 weights cast (no autocast)" "ours bf16 weights cast, channels-last (no autocast)" "ours bf16 weights cast, CUDA graph" "ours bf16 weights cast, channels-last, CUDA graph" "ours bf16 weights cast, fused GroupNorm+SiLU" "ours bf16 weights cast, channels-last, fused GroupNorm+SiLU, CUDA graph" --no-ranges --out "$OUT/tables.md"
# 5. The Compile node's own path (restore_crops through torch.compile) on bf16 weights, NCHW against
#    a channels-last graph input (runtime/compile.py CHANNELS_LAST_INPUT): two compiles.
step restore_compile 240 $PY -m bench.compile_restore $DEV --precisions bf16 --weight-dtype bf16 --layouts nchw channels-last --modes default --crops 16 --chunk 8 --rounds 3 --out "$OUT/tables.md"
echo "tables: $OUT/tables.md"
cat "$OUT/tables.md" 2>/dev/null | tail -c 6000
