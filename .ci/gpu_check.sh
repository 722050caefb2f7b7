#!/usr/bin/env bash
# The prepared GPU check for a session that is lent a device (see /work/.library/device):
#   run(command="bash .ci/gpu_check.sh", timeout_s=560)
# It uses the device image's own python3 and torch (nothing is installed) and writes
# everything under $OUT (or ./gpu-check). Budget: under 8 minutes on one H100/H200.
#   1. the CUDA-only tests (tests/test_engine.py -k cuda), at most 90 s;
#   2. python -m spreadcon.gpu_check: the paper preset's step with torch.compile off,
#      default and mode="reduce-overhead" (images/s, fraction of the bf16 matmul peak);
#      a short real run of the official preset on CIFAR-10 (8,000 images, 2 epochs);
#      one timed epoch per backbone, projected to 600 epochs per method. At most 360 s.
# Afterwards: copy $OUT/gpu.json to results/bench/gpu.json (commit it) and
# `python -m spreadcon reproduce --paper --dry-run` prices the grid at what was measured.
#
# On a CPU (a dry run: `OUT=/tmp/g PYTHON=.venv/bin/python bash .ci/gpu_check.sh`) the CUDA
# tests are skipped, the step and projection sections say they were skipped, and the
# official run goes through the whole pipeline at a tiny size on the CPU (about 15 s);
# gpu.json then has no "gpu" section, so the dry-run pricing stays "assumed". Seen on
# this project's 2-core CPU (2026-12-07), the tail of a dry run:
#   2 skipped, 21 deselected in 1.57s
#   == step: {"skipped": "device 'cpu' is not an available CUDA device", "section_s": 0.0}
#   == official: {"record": "/tmp/g/results/transfer/cifar10/official.set.bb8b21cc9735/spread-quirks_seed0.json", "wall_s": 6.7, ...}
#   == projection: {"skipped": "device 'cpu' is not an available CUDA device", "section_s": 0.0}
# (the record's preset is `official.set.<hash>`: a run whose config differs from its preset
# never lands under the preset's own name.)
set -uo pipefail
out="${OUT:-gpu-check}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The data travels as a subset (python -m spreadcon.gpu_check --make-data ../shared/data .gpu-data; carry it).
if [ -d .gpu-data ]; then export SPREADCON_DATA="$PWD/.gpu-data"; else export SPREADCON_DATA="${SPREADCON_DATA:-$PWD/../shared/data}"; fi
py="${PYTHON:-python3}"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi: a CPU dry run"
  "$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
  timeout 90 "$py" -m pytest -q -p no:cacheprovider tests/test_engine.py -k cuda
  timeout 360 "$py" -m spreadcon.gpu_check "$out"
} 2>&1 | tee "$out/log.txt"
