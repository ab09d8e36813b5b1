#!/usr/bin/env bash
# One call on a GPU machine, under 5 minutes: the cohort tests on CUDA (and the rest of tests/test_cohort.py),
# then the cohort, speed and MFU benchmark rows on the GPU (`python -m benchmarks --quick --device cuda`).
#
#   bash benchmarks/gpu_smoke.sh            # from the repository root; figures land in $OUT (default runs/gpu_smoke)
#
# Needs the package's dependencies installed (pip install -e ".[test]"); no network. Not yet run on a GPU:
# README "Performance" marks the GPU figures as unmeasured until this script's output replaces them.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu_smoke}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)" \
  | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/device.txt" 2>/dev/null || true
# Tests: ~1 min. The CUDA equivalence tests are the point; the CPU ones take seconds on 16 cores.
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_cohort.py 2>&1 | tee "$OUT/tests.txt"
# Rows: ~2 min on an H100/H200 (N = 1, 4, 16, 64 for lenet_300_100, conv4, resnet20 at their paper batches).
timeout 170 python3 -m benchmarks --quick --device cuda --only cohort,speed,mfu --json > "$OUT/bench.json" 2> "$OUT/bench.txt"
cat "$OUT/bench.txt"
