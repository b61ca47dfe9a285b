#!/usr/bin/env bash
# The GPU check (issue #11), sized for one device call: about 6 minutes on an H100/H200, so that
# a rerun fits in a session's 15 minutes of device time.
#   here, first:  bash bench/gpu_prepare.sh        (Gowalla + wheels in bench/.data)
#   device tool:  run  command "bash bench/gpu_check.sh"  carry ["bench/.data"]  timeout_s 540
# 1. the CUDA-path tests against their CPU references (trainer, evaluation; faiss-gpu's when
#    faiss has GPU support), 2. bench/gpu_check.py: evaluation, index, training and profile
#    parts on Gowalla with their own time budgets. Everything goes to $OUT (gpu_check.log,
#    gpu_check.json, training_gpu.json, profile_*.txt); copy gpu_check.json and the rows of
#    training_gpu.json into docs/results/ and run bench/report.py (docs/benchmarks.md#gpu).
# GPU_CHECK_DEVICE=cpu GPU_CHECK_SCALE=0.05 GPU_CHECK_ITEMS=20000 runs it all here on the CPU;
# with PYTHON=<a venv holding only the device image's packages> and GPU_CHECK_STAGE=<a folder
# gpu_prepare.sh staged for that Python>, it rehearses the device's install too.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
device="${GPU_CHECK_DEVICE:-cuda}"
stage="${GPU_CHECK_STAGE:-bench/.data}"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

if ! "$py" -c "import pydantic_settings, faiss" 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$stage"/wheels/*.whl || { echo "wheels: run bench/gpu_prepare.sh here"; exit 1; }
  export PYTHONPATH="$PWD:/tmp/site"
fi
"$py" - "$device" <<'PY' || exit 1
import sys, torch, faiss
dev = sys.argv[1]
assert dev == "cpu" or torch.cuda.is_available(), "no CUDA device visible"
name = torch.cuda.get_device_name(0) if dev != "cpu" else "cpu"
print("torch", torch.__version__, "| device", name, "| faiss", faiss.__version__,
      "| faiss GPUs", faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0)
PY
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv

echo "== CUDA-path tests against the CPU references =="
# --noconftest: the service's test fixtures import fastapi, which that machine lacks; these
# tests use none of them
SPECREC_TEST_DEVICE="$device" timeout 150 "$py" -m pytest -q -p no:cacheprovider --noconftest \
  -m gpu tests/trainer/test_cuda.py tests/trainer/test_evaluate.py tests/service/test_index.py
tests=$?

echo "== bench/gpu_check.py =="
data="$stage/gowalla"
[ -f "$data/train.txt" ] || { echo "missing $data: run bench/gpu_prepare.sh here"; exit 1; }
timeout "${GPU_CHECK_TIMEOUT:-420}" "$py" bench/gpu_check.py --data "$data" --device "$device" \
  --out "$out" --scale "${GPU_CHECK_SCALE:-1}" --items "${GPU_CHECK_ITEMS:-1000000}"
bench=$?
echo "tests exit $tests, gpu_check exit $bench"
exit $(( tests || bench ))
