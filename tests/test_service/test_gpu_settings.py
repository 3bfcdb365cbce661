"""service.settings: the GPU settings (device index, CUDA provider options, I/O binding, one slot per
GPU, the GPU memory budget) and what a CUDA device does on a host without CUDA."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.runtime import CUDA_PROVIDER, RuntimeOptions, available_providers
from service.errors import SettingsError
from service.gpu_memory import gpu_free_memory_bytes, nvml_index
from service.settings import MEMORY_BUDGET_FLOOR, Settings, add_arguments, default_gpu_memory_budget

ROOT = Path(__file__).resolve().parents[2]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_gpu_defaults_keep_the_cpu_path_and_tf32_off() -> None:
    settings = Settings.from_sources(_parse([]), environ={})
    assert settings.device == "auto" and settings.io_binding == "auto"
    assert settings.runtime_options() == RuntimeOptions()
    assert settings.runtime_options().cuda_provider_options(0)["use_tf32"] == "0"


def test_flags_and_variables_become_the_cuda_provider_options() -> None:
    settings = Settings.from_sources(
        _parse(
            [
                "--device",
                "cuda:1",
                "--allow-tf32",
                "--gpu-mem-limit",
                "12GiB",
                "--memory-budget-bytes",
                "1GiB",
            ]
        ),
        environ={"MOLLIFY_CUDNN_CONV_ALGO_SEARCH": "HEURISTIC", "MOLLIFY_IO_BINDING": "off"},
    )
    assert settings.device == "cuda:1"
    assert settings.runtime_options().cuda_provider_options(1) == {
        "device_id": "1",
        "cudnn_conv_algo_search": "HEURISTIC",
        "use_tf32": "1",
        "gpu_mem_limit": str(12 << 30),
    }
    assert settings.runtime_options().io_binding == "off"
    env_device = Settings.from_sources(
        _parse([]), environ={"MOLLIFY_DEVICE": "cuda:2", "MOLLIFY_ALLOW_TF32": "no"}
    )
    assert env_device.device == "cuda:2" and not env_device.allow_tf32


def test_a_cuda_device_gets_one_computing_slot_unless_told_otherwise() -> None:
    assert Settings.from_sources(_parse(["--device", "cuda"]), environ={}).max_concurrent_requests == 1
    assert (
        Settings.from_sources(_parse([]), environ={"MOLLIFY_DEVICE": "cuda:3"}).max_concurrent_requests == 1
    )
    told = Settings.from_sources(_parse(["--device", "cuda", "--max-concurrent-requests", "3"]), environ={})
    assert told.max_concurrent_requests == 3


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (
            ["--device", "cuda:x"],
            {},
            "--device / MOLLIFY_DEVICE must be one of ['auto', 'cpu', 'cuda', 'cuda:N']",
        ),
        ([], {"MOLLIFY_DEVICE": "cpu:1"}, "--device / MOLLIFY_DEVICE must be one of"),
        (
            ["--io-binding", "always"],
            {},
            "--io-binding / MOLLIFY_IO_BINDING must be one of ['auto', 'on', 'off']",
        ),
        (
            [],
            {"MOLLIFY_CUDNN_CONV_ALGO_SEARCH": "fastest"},
            "--cudnn-conv-algo-search / MOLLIFY_CUDNN_CONV_ALGO_SEARCH",
        ),
        (
            [],
            {"MOLLIFY_GPU_MEM_LIMIT": "lots"},
            "MOLLIFY_GPU_MEM_LIMIT (or --gpu-mem-limit): expected a byte count",
        ),
        ([], {"MOLLIFY_ALLOW_TF32": "maybe"}, "MOLLIFY_ALLOW_TF32 (or --allow-tf32)"),
    ],
)
def test_bad_gpu_values_name_flag_and_variable(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources(_parse(argv), environ=env)
    assert message in str(caught.value)


def test_the_memory_budget_comes_from_the_gpu_when_the_device_is_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import service.settings as module

    asked: list[int] = []
    monkeypatch.setattr(module, "gpu_free_memory_bytes", lambda index: asked.append(index) or 40 << 30)
    settings = Settings(device="cuda:1", max_concurrent_requests=2)
    assert asked == [1]
    assert settings.memory_budget_bytes == 10 << 30
    assert "free memory of the GPU" in settings.memory_budget_source
    assert (
        Settings(device="cuda", max_concurrent_requests=1, gpu_mem_limit=8 << 30).memory_budget_bytes
        == 4 << 30
    )
    # The CPU path never asks the GPU.
    asked.clear()
    cpu = Settings(device="cpu", max_concurrent_requests=1)
    assert asked == [] and "a quarter of the memory this process may use" in cpu.memory_budget_source
    # A CUDA setting on a host whose GPU memory cannot be read keeps the host rule.
    monkeypatch.setattr(module, "gpu_free_memory_bytes", lambda index: None)
    assert Settings(device="cuda", max_concurrent_requests=1).memory_budget_bytes == cpu.memory_budget_bytes
    assert default_gpu_memory_budget(4, 100 << 20) == MEMORY_BUDGET_FLOOR


def test_nvml_index_follows_cuda_visible_devices() -> None:
    assert nvml_index(1, None) == 1
    assert nvml_index(1, "3,5") == 5
    assert nvml_index(2, "3,5") is None
    assert nvml_index(0, "GPU-8d1c") is None
    if CUDA_PROVIDER not in available_providers():
        assert gpu_free_memory_bytes(0) is None or gpu_free_memory_bytes(0) > 0


@pytest.mark.skipif(CUDA_PROVIDER in available_providers(), reason="this host has a working CUDA provider")
def test_serving_on_cuda_n_without_cuda_says_the_device_is_unavailable(tmp_path: Path) -> None:
    """``mollify serve --device cuda:1`` on a CPU host: settings accepted, every model not ready with
    DeviceUnavailableError naming the device (the server itself keeps serving health)."""
    from service.core import MollifyCore

    settings = Settings.from_sources(_parse(["--device", "cuda:1", "--cache-dir", str(tmp_path)]), environ={})
    core = MollifyCore(settings)
    core.load()
    models = core.list_models()
    assert models and not any(model.ready for model in models)
    for model in models:
        assert "DeviceUnavailableError" in model.error and "device='cuda:1' was asked for" in model.error


def test_serve_with_a_bad_device_prints_settings_and_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--device", "gpu:1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("SETTINGS: --device / MOLLIFY_DEVICE must be one of"), result.stderr
    assert json.dumps("cuda:N")[1:-1] in result.stderr
