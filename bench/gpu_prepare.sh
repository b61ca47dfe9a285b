#!/usr/bin/env bash
# Stage, here, what bench/gpu_check.sh needs on the lent GPU machine, which has no network and
# runs Python 3.12 with torch (CUDA), numpy, scipy, pytest and hypothesis but none of this
# project's other dependencies: Gowalla and the wheels it lacks, in bench/.data (git-ignored),
# which the device call carries. Then, with the device tool:
#   run  command: bash bench/gpu_check.sh   carry: ["bench/.data"]   timeout_s: 540
# The wheels are the versions installed in .venv (the ones the tests pass with here), for
# CPython 3.12 on x86-64 Linux. faiss-gpu is not among them: faiss-gpu-cu12 needs the CUDA 12
# runtime and cuBLAS wheels (cuBLAS alone is 410 MB), past the 64 MiB a device call carries,
# so the index part measures faiss on the CPU and torch's exact scan on the GPU and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
data_src=${1:-../shared/data/gowalla}
venv_py=${VENV_PY:-.venv/bin/python}
# another Python or folder rehearses the install here, e.g. GPU_PYTHON_VERSION=3.11
# GPU_STAGE=/tmp/stage with a venv of the device's packages (bench/gpu_check.sh's header)
pyver=${GPU_PYTHON_VERSION:-3.12}
stage=${GPU_STAGE:-bench/.data}
mkdir -p "$stage/gowalla" "$stage/wheels"
cp "$data_src"/*.txt "$stage/gowalla/"
rm -f "$stage"/wheels/*.whl
for name in pydantic pydantic-core pydantic-settings python-dotenv annotated-types \
  typing-inspection typing-extensions faiss-cpu; do
  version=$("$venv_py" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$version" ] || { echo "$name is not installed in $venv_py (make install)" >&2; exit 1; }
  "$venv_py" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$pyver" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$stage/wheels" "$name==$version" 2>&1 | grep -v "^WARNING: Location" || true
  ls "$stage"/wheels/"${name//-/_}"-"$version"-*.whl > /dev/null
done
size=$(du -sm "$stage" | cut -f1)
echo "staged $stage: ${size} MiB ($(ls "$stage/wheels" | wc -l) wheels, Gowalla)"
[ "$size" -le 56 ] || { echo "over the 64 MiB a device call carries (with the tree)" >&2; exit 1; }
