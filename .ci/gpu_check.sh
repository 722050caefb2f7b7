#!/usr/bin/env bash
# The prepared GPU check for a session that is lent a device (see /work/.library/device):
#   run(command="bash .ci/gpu_check.sh", timeout_s=560)
# It uses the device image's own python3 and torch (nothing is installed), runs the
# CUDA-only tests, then the GPU bench section twice (torch.compile on, as the paper
# preset runs, and off), and writes everything under $OUT (or ./gpu-check).
set -uo pipefail
out="${OUT:-gpu-check}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_engine.py -k cuda
  timeout 360 python3 - "$out" <<'PY'
import json, sys
from spreadcon.bench import bench_gpu, machine, write_json_atomic, _provenance
out = {"machine": machine(), **_provenance()}
for compile in (True, False):
    out[f"gpu_compile_{str(compile).lower()}"] = r = bench_gpu("cuda", epochs=2, compile=compile)
    print(json.dumps(r), flush=True)
out["gpu"] = out["gpu_compile_true"]
write_json_atomic(out, f"{sys.argv[1]}/gpu.json")
PY
} 2>&1 | tee "$out/log.txt"
