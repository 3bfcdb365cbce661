"""Free memory of an NVIDIA GPU, read through NVML (``libnvidia-ml.so.1``, shipped with the driver).

Read once at start-up by :mod:`service.settings` when the device is CUDA, to choose the default
memory budget from the GPU rather than the host. Without the driver library (any CPU host) or
when NVML fails, :func:`gpu_free_memory_bytes` returns ``None`` and the host rule applies.
Imports only the standard library.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["gpu_free_memory_bytes", "nvml_index"]


class _MemoryInfo(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def nvml_index(cuda_index: int, visible: str | None) -> int | None:
    """NVML's index of CUDA device ``cuda_index`` given ``CUDA_VISIBLE_DEVICES`` (``visible``).

    CUDA numbers only the visible GPUs; NVML numbers all of them. ``None`` when the mapping is
    unknown (UUIDs in the variable) or the index is not visible.
    """
    if visible is None or not visible.strip():
        return cuda_index
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if cuda_index >= len(entries) or not entries[cuda_index].isdigit():
        return None
    return int(entries[cuda_index])


def gpu_free_memory_bytes(cuda_index: int = 0) -> int | None:
    """Free memory of CUDA device ``cuda_index`` in bytes; ``None`` where it cannot be read."""
    index = nvml_index(cuda_index, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if index is None:
        return None
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        handle = ctypes.c_void_p()
        if nvml.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(handle)) != 0:
            return None
        info = _MemoryInfo()
        if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(info)) != 0:
            return None
        return int(info.free)
    finally:
        nvml.nvmlShutdown()
