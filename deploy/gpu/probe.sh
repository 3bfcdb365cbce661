#!/usr/bin/env bash
# Device command 0 (carries nothing large): what the GPU machine has, so the right wheels are sent.
# Prints the Python tag (the onnxruntime-gpu wheel must match it), torch's CUDA and cuDNN, the GPU,
# and the project's imports that are missing there (their wheels go into .gpu-transfer/wheels too).
set -u
python3 -c 'import sys; print("python", sys.version.split()[0], "tag cp%d%d" % sys.version_info[:2])'
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv,noheader || true
for module in numpy onnx onnxruntime grpc grpc_health google.protobuf threadpoolctl captum; do
  python3 -c "import $module" 2>/dev/null && echo "have $module" || echo "MISSING $module"
done
ls -la .gpu-transfer 2>/dev/null || echo "no .gpu-transfer yet"
