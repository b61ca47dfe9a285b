#!/usr/bin/env bash
# GPU check, sized for one device call (< 8 min on an H100): CUDA-path tests, then
# MF-DirectSpec+ and LightGCN-DirectSpec+ on Gowalla with seconds per epoch and Recall@20.
#
# Prepare here (Gowalla is not in the repo and ../shared does not travel; the device machine
# has no network, so the pure-Python dependencies travel as wheels):
#   mkdir -p bench/.data && cp -r ../shared/data/gowalla bench/.data/gowalla
#   .venv/bin/pip download -d bench/.data/wheels pydantic pydantic-settings tqdm
# Then run through the device tool with carry ["bench/.data"]:
#   bash bench/gpu_check.sh
# Uses the machine's own python3 with torch (CUDA), numpy and scipy. Output also goes to
# $OUT/gpu_check.log when OUT is set; result rows to $OUT/training_gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
log="${OUT:-/tmp}/gpu_check.log"
exec > >(tee "$log") 2>&1

python3 - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible"
print("torch", torch.__version__, "device", torch.cuda.get_device_name(0))
PY

python3 -c "import pydantic, pydantic_settings, tqdm" 2>/dev/null ||
  python3 -m pip install -q --no-index --find-links bench/.data/wheels \
    pydantic pydantic-settings tqdm

echo "== GPU-path tests (CUDA vs CPU reference) =="
python3 -m pytest -q -p no:cacheprovider -m gpu tests/trainer
echo "== trainer tests with SPECREC_DEVICE=cuda =="
SPECREC_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider -x \
  tests/trainer/test_losses.py tests/trainer/test_encoders.py tests/trainer/test_train.py

data=bench/.data/gowalla
[ -f "$data/train.txt" ] || { echo "missing $data (see the header)"; exit 1; }
echo "== Gowalla on CUDA =="
out="${OUT:-/tmp}/training_gpu.json"
timeout 240 python3 bench/train_bench.py --data "$data" --method MF-DirectSpec+ --label gpu \
  --preset gowalla-reference --epochs 20 --eval-every 5 --set device=cuda --out "$out"
timeout 180 python3 bench/train_bench.py --data "$data" --method LightGCN-DirectSpec+ \
  --label gpu --preset gowalla-reference --epochs 5 --eval-every 5 --set device=cuda --out "$out"
