#!/usr/bin/env bash
# Last device command: reassemble and verify the pieces, install onnxruntime-gpu (and any other
# carried wheel) into a venv beside the machine's torch, point the CUDA provider at the CUDA and
# cuDNN libraries torch ships, check the session really runs on CUDA, then run benchmarks/gpu.py.
#   bash deploy/gpu/install_and_run.sh [benchmark flags, e.g. --device cuda:0]
set -euo pipefail
OUT=${GPU_TRANSFER_DIR:-.gpu-transfer}
python3 deploy/gpu/transfer.py join --out "$OUT" --into "$OUT/wheels-joined"
if [ ! -x "$OUT/venv/bin/python" ]; then
  # --system-site-packages: the machine's torch (CUDA 13, cuDNN) stays visible; the venv's
  # onnxruntime-gpu shadows the machine's CPU-only onnxruntime (same import name).
  python3 -m venv --system-site-packages "$OUT/venv"
fi
"$OUT/venv/bin/python" -m pip install --no-deps --no-index --force-reinstall "$OUT"/wheels-joined/*.whl
# CUDA provider libraries: torch's lib folder and the nvidia-* wheels' lib folders (cuDNN, cuBLAS, ...).
LIBS=$("$OUT/venv/bin/python" - <<'PY'
import glob, os, torch
site = os.path.dirname(os.path.dirname(torch.__file__))
folders = [os.path.join(os.path.dirname(torch.__file__), "lib")]
folders += sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib"))) + sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "lib")))
print(":".join(f for f in dict.fromkeys(folders) if os.path.isdir(f)))
PY
)
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$OUT/venv/bin/python" - <<'PY'
import torch  # loads torch's CUDA and cuDNN first, so onnxruntime finds them by soname
import onnxruntime as ort
from models.runtime import CUDA_PROVIDER, GradientSession, available_providers
print("onnxruntime", ort.__version__, ort.get_device(), ort.get_available_providers())
assert CUDA_PROVIDER in available_providers(), "the CUDA provider does not load: see the lines above"
PY
PYTHONPATH=. "$OUT/venv/bin/python" benchmarks/gpu.py "$@"
