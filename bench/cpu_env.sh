#!/usr/bin/env bash
# The CPU forward comparison (bench.model_forward) under each process setting that PyTorch or glibc
# reads only at start-up, one fresh process per row (about 10 minutes on the 2-core VM):
#   bash bench/cpu_env.sh [ROUNDS]
# defaults; OpenMP workers that sleep; huge pages for PyTorch's large buffers; both (what
# `python -m restoreformer_node` sets); glibc keeping freed memory (no page faults: a reference for
# the compute alone, not a setting to ship); and that with sleeping OpenMP workers.
set -uo pipefail
ROUNDS=${1:-7}
PY=${PYTHON:-python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# Every row starts from none of the settings the bench tables report (bench.common.RUNTIME_ENV).
CLEAR=()
for name in $("$PY" -c "from bench.common import RUNTIME_ENV; print(*RUNTIME_ENV)"); do CLEAR+=(-u "$name"); done
KEEP_FREED="MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=4294967296"
for setting in "" "OMP_WAIT_POLICY=PASSIVE" "THP_MEM_ALLOC_ENABLE=1" "OMP_WAIT_POLICY=PASSIVE THP_MEM_ALLOC_ENABLE=1" \
  "$KEEP_FREED" "OMP_WAIT_POLICY=PASSIVE $KEEP_FREED"; do
  # shellcheck disable=SC2086  # each setting is a list of NAME=VALUE words
  env "${CLEAR[@]}" $setting "$PY" -m bench.model_forward --device cpu --rounds "$ROUNDS" --no-plain --no-onnx | grep -E '^(###|\| (spandrel|ours))'
done
