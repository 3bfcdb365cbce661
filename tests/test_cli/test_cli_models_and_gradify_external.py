"""``mollify models`` shows how each model is batched and a failed newer version; ``mollify gradify``
keeps the weights of a gradient model with external data in their files (models over 2 GB)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.cli import main
from service.cli.models_command import describe, model_record
from service.vocabulary import ModelInfo


def _info(name: str, **fields: object) -> ModelInfo:
    values: dict[str, object] = dict(
        name=name,
        ready=True,
        error="",
        input_name="input",
        input_shape=(3, 8, 8),
        output_name="logits",
        output_shape=(5,),
        lower=np.zeros(1, np.float32),
        upper=np.ones(1, np.float32),
        labels=list("abcde"),
        feature_names=[],
        preprocessing={},
        provider="CPUExecutionProvider",
        description="",
        batching="dynamic",
        version="0123456789abcdef",
    )
    values.update(fields)
    return ModelInfo(**values)  # type: ignore[arg-type]


def test_models_shows_batching_and_a_failed_newer_version() -> None:
    models = [
        _info("dynamic_net"),
        _info("torch_default", batching="fixed", fixed_batch_size=1),
        _info("export_b4", batching="fixed", fixed_batch_size=4),
        _info("made_symbolic", batching="symbolic"),
        _info(
            "flip", stale=True, candidate_error="InvalidModelError: model file 'flip/model.onnx' is truncated"
        ),
        _info(
            "broken",
            ready=False,
            error="ModelConfigError: lacks the field 'input_shape'",
            batching="",
            provider="",
            version="",
        ),
    ]
    text = describe(models)
    rows = {line.split()[0]: line for line in text.splitlines()[2:8]}
    assert "batching" in text.splitlines()[0]
    assert "dynamic" in rows["dynamic_net"] and "fixed (1 row)" in rows["torch_default"]
    assert "fixed (4 rows)" in rows["export_b4"] and "symbolic" in rows["made_symbolic"]
    assert rows["flip"].split()[1] == "stale" and rows["broken"].split()[1] == "FAILED"
    assert (
        "flip: its changed files failed to load; the last good version (0123456789abcdef) keeps serving: "
        "InvalidModelError: model file 'flip/model.onnx' is truncated" in text
    )
    assert "broken: ModelConfigError" in text
    record = model_record(models[1])
    assert (record["batching"], record["fixed_batch_size"], record["stale"], record["candidate_error"]) == (
        "fixed",
        1,
        False,
        "",
    )
    assert model_record(models[4])["stale"] and "truncated" in model_record(models[4])["candidate_error"]


def test_models_json_from_a_server_carries_the_batching_fields(
    server_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "--server", server_address, "--json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    digits = models["digits_cnn"]
    assert digits["batching"] == "dynamic" and digits["fixed_batch_size"] == 0
    assert digits["stale"] is False and digits["candidate_error"] == "" and len(digits["version"]) == 16
    assert main(["models", "digits_cnn", "--server", server_address]) == 0
    assert "dynamic" in capsys.readouterr().out


def _external_data_source(folder: Path) -> Path:
    """``y = tanh(x) @ W`` with W in ``model.onnx.data`` (how PyTorch exports write weights)."""
    weight = np.arange(128, dtype=np.float32).reshape(16, 8) / 200  # over 64 values: never inlined
    graph = helper.make_graph(
        [helper.make_node("Tanh", ["x"], ["h"]), helper.make_node("MatMul", ["h", "W"], ["logits"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    return folder / "model.onnx"


def test_gradify_never_reads_external_weights_into_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _external_data_source(tmp_path / "src")
    out = tmp_path / "out" / "model.grad.onnx"

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the external weights of a gradient model were read into memory")

    monkeypatch.setattr(onnx.external_data_helper, "load_external_data_for_model", refuse)
    code = main(["gradify", str(source), "-o", str(out), "--input", "x", "--output", "logits"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.with_name("model.grad.onnx.data").is_file()
    assert "weights in model.grad.onnx.data" in captured.out
    assert "smoke run" in captured.out and "finite" in captured.out and "NOT finite" not in captured.out
