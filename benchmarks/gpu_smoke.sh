#!/usr/bin/env bash
# One call on a GPU machine, under 5 minutes: the cohort and compile tests on CUDA (with the rest of
# tests/test_cohort.py and tests/test_compile.py), then the cohort, speed and MFU benchmark rows on the GPU
# (`python -m benchmarks --quick --device cuda`) and the compile rows (--compile on vs eager; CUDA graphs
# for small steps, ticketx.train.compile_plan).
#
#   bash benchmarks/gpu_smoke.sh            # from the repository root; figures land in $OUT (default runs/gpu_smoke)
#
# Needs the package's dependencies installed (pip install -e ".[test]"); no network. Not yet run on a GPU:
# README "Performance" marks the GPU figures as unmeasured until this script's output replaces them.
# Each part has its own time limit and its own output file, so one that runs long loses only its own figures.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu_smoke}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)" \
  | tee "$OUT/device.txt" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/device.txt" 2>/dev/null || true
status=0
# Tests: ~1.5 min. The CUDA tests (cohort equivalence, CUDA-graph step) are the point; the CPU ones take seconds on 16 cores.
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_cohort.py tests/test_compile.py 2>&1 | tee "$OUT/tests.txt" || status=1
# Rows: ~1.5 min on an H100/H200 (N = 1, 4, 16, 64 for lenet_300_100, conv4, resnet20 at their paper batches).
timeout 100 python3 -m benchmarks --quick --device cuda --only cohort,speed,mfu --json > "$OUT/bench.json" 2> "$OUT/bench.txt" || status=1
cat "$OUT/bench.txt"
# Compile rows: ~1 min (resnet20 and lenet_300_100: a cold and a cached compile each, then compiled vs eager steps).
timeout 80 python3 -m benchmarks --quick --device cuda --only compile --json > "$OUT/compile.json" 2> "$OUT/compile.txt" || status=1
cat "$OUT/compile.txt"
exit $status
