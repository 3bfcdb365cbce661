"""``--providers`` / ``MOLLIFY_PROVIDERS``: the execution providers of every session come from the
settings; one that onnxruntime lacks or that does not load here is a clear start-up error (no
silent fallback), and the provider a model reports is the one its session really runs on."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from estimator.errors import InvalidArgumentError
from estimator.method import Method
from models.gradient_graph import build_gradient_model
from models.runtime import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    DeviceUnavailableError,
    GradientSession,
    OrtBackend,
    RuntimeOptions,
    check_providers,
)
from models.runtime import providers as provider_module
from service.client import ExplainerClient
from service.errors import SettingsError
from service.settings import Settings, add_arguments

ROOT = Path(__file__).resolve().parents[2]
CPU_ONLY = (CPU_PROVIDER,)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def _not_in_this_build() -> str | None:
    """A provider onnxruntime knows but this build lacks (OpenVINO, DirectML, ... on most hosts)."""
    listed = set(ort.get_available_providers())
    return next((name for name in ort.get_all_providers() if name not in listed), None)


def test_the_flag_and_the_variable_become_the_sessions_providers() -> None:
    flag = Settings.from_sources(_parse(["--providers", "CPUExecutionProvider"]), environ={})
    assert flag.providers == CPU_ONLY
    assert flag.runtime_options() == RuntimeOptions(providers=CPU_ONLY)
    env = Settings.from_sources(
        _parse([]), environ={"MOLLIFY_PROVIDERS": " CUDAExecutionProvider , CPUExecutionProvider"}
    )
    assert env.providers == (CUDA_PROVIDER, CPU_PROVIDER)
    assert Settings.from_sources(_parse([]), environ={}).providers is None
    assert Settings.from_sources(_parse([]), environ={}).runtime_options().providers == ()


def test_help_says_there_is_no_silent_fallback() -> None:
    text = argparse.ArgumentParser()
    add_arguments(text)
    help_text = " ".join(text.format_help().split())
    assert "--providers NAME,NAME" in help_text
    assert "there is no silent fallback" in help_text and "MOLLIFY_PROVIDERS" in help_text


def test_an_unknown_provider_names_the_flag_and_the_available_providers() -> None:
    settings = Settings.from_sources(
        _parse(["--providers", "CUDAExecutonProvider,CPUExecutionProvider"]), environ={}
    )
    with pytest.raises(SettingsError) as caught:
        settings.runtime_options()
    message = str(caught.value)
    assert message.startswith(
        "--providers / MOLLIFY_PROVIDERS: unknown execution providers ['CUDAExecutonProvider']"
    )
    assert str(ort.get_available_providers()) in message


def test_a_provider_missing_from_this_build_is_refused() -> None:
    missing = _not_in_this_build()
    if missing is None:
        pytest.skip("this onnxruntime build has every provider it knows")
    with pytest.raises(SettingsError, match=rf"\['{missing}'\] are not in this onnxruntime build"):
        Settings(providers=(missing, CPU_PROVIDER)).runtime_options()
    # Opening a session with it directly is refused the same way, never run on CPU instead.
    model = build_gradient_model(_linear())
    with pytest.raises(DeviceUnavailableError, match="not in this onnxruntime build"):
        GradientSession(model, options=RuntimeOptions(providers=(missing, CPU_PROVIDER)))


def test_a_listed_provider_that_does_not_load_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    candidates = [name for name in ort.get_available_providers() if name != CPU_PROVIDER]
    broken = next((name for name in candidates if not provider_module.provider_loads(name)), None)
    if broken is None:
        pytest.skip("every provider this onnxruntime lists loads on this host")
    with pytest.raises(
        DeviceUnavailableError, match=rf"\['{broken}'\] are listed by onnxruntime .* but do not load"
    ):
        check_providers([broken, CPU_PROVIDER])
    # Were the probe fooled, the session's own fallback is still caught: the provider in use is read back.
    monkeypatch.setattr(provider_module, "provider_loads", lambda name: True)
    monkeypatch.setattr("models.runtime.ort_backend.cuda_loads", lambda: True)
    model = build_gradient_model(_linear())
    with pytest.raises(
        DeviceUnavailableError, match=rf"fell back to \['CPUExecutionProvider'\] \(dropped: \['{broken}'\]\)"
    ):
        GradientSession(model, options=RuntimeOptions(providers=(broken, CPU_PROVIDER)))


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (
            ["--device", "cpu", "--providers", "CUDAExecutionProvider,CPUExecutionProvider"],
            {},
            "--providers / MOLLIFY_PROVIDERS must be CPUExecutionProvider alone with --device cpu",
        ),
        (
            ["--device", "cuda:1", "--providers", "CPUExecutionProvider"],
            {},
            "--providers / MOLLIFY_PROVIDERS must be a list with CUDAExecutionProvider with --device cuda:1",
        ),
        (
            ["--providers", "CPUExecutionProvider,CPUExecutionProvider"],
            {},
            "--providers / MOLLIFY_PROVIDERS must be names that each appear once",
        ),
        (
            [],
            {"MOLLIFY_PROVIDERS": "CPUExecutionProvider,,"},
            "MOLLIFY_PROVIDERS (or --providers): expected comma-separated",
        ),
    ],
)
def test_malformed_or_contradicting_providers_are_settings_errors(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources(_parse(argv), environ=env)
    assert message in str(caught.value)


def test_the_models_layer_validates_providers_too() -> None:
    with pytest.raises(InvalidArgumentError, match="providers must not repeat a name"):
        RuntimeOptions(providers=(CPU_PROVIDER, CPU_PROVIDER))
    with pytest.raises(
        InvalidArgumentError, match=r"device='cpu' cannot run on the providers \['CUDAExecutionProvider'\]"
    ):
        OrtBackend(device="cpu", options=RuntimeOptions(providers=(CUDA_PROVIDER, CPU_PROVIDER)))
    with pytest.raises(InvalidArgumentError, match="needs CUDAExecutionProvider among the providers"):
        OrtBackend(device="cuda", options=RuntimeOptions(providers=CPU_ONLY))
    session = GradientSession(build_gradient_model(_linear()), options=RuntimeOptions(providers=CPU_ONLY))
    assert session.provider == CPU_PROVIDER
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(session(x, np.ones((2, 2), np.float32)).gradients, np.full((2, 3), 2.0))


def test_serve_with_an_unknown_provider_prints_settings_and_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--providers", "NoSuchExecutionProvider"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        "SETTINGS: --providers / MOLLIFY_PROVIDERS: unknown execution providers ['NoSuchExecutionProvider']"
    ), result.stderr


def test_a_server_on_the_cpu_provider_reports_it_in_get_model(
    tmp_path: Path, helpers: SimpleNamespace
) -> None:
    helpers.write_model(tmp_path / "models", "linear")
    settings = Settings(
        address="127.0.0.1:0",
        model_repository=tmp_path / "models",
        cache_dir=tmp_path / "cache",
        providers=CPU_ONLY,
        intra_op_threads=1,
        max_concurrent_requests=1,
    )
    server = helpers.start_server(settings)
    try:
        with ExplainerClient(f"127.0.0.1:{server.port}", timeout=60) as client:
            info = client.get_model("linear")
            assert info.ready, info.error
            assert info.provider == CPU_PROVIDER
            [result] = client.explain(
                "linear", np.zeros((1, 4), np.float32), method=Method(samples=8), target=0, seed=1
            )
            assert result.attribution.shape == (4,) and np.abs(result.attribution).max() > 0
    finally:
        server.stop(0).wait()


def _linear() -> onnx.ModelProto:
    """``y = x @ W`` with ``W`` all ones, ``(B, 3) → (B, 2)``: each input's gradient is the sum of the cotangent."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.ones((3, 2), np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model
