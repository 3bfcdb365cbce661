"""models.gradify and ``mollify gradify``: good models, bad models, clear errors and exit codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.config import MODEL_FILE_NAME
from models.demo import repository_path
from models.gradient_graph import InvalidModelError, UnsupportedOpError, load_model, read_gradient_metadata
from models.gradify import check_gradient_model, gradify, summarize
from models.runtime import GradientSession
from service.cli import main
from service.cli.gradify_command import parse_shape


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def _good(path: Path, width: int | str = 4) -> Path:
    weight = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    model = _model(
        [
            helper.make_node("Tanh", ["x"], ["h"]),
            helper.make_node("MatMul", ["h", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weight, "W")],
    )
    path.write_bytes(model.SerializeToString())
    return path


def _unsupported(path: Path) -> Path:
    # The determinant has no VJP rule and sits between the input and the output.
    model = _model(
        [helper.make_node("Det", ["x"], ["d"], name="the_det"), helper.make_node("Tanh", ["d"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
    )
    path.write_bytes(model.SerializeToString())
    return path


def _integer_input(path: Path) -> Path:
    model = _model(
        [
            helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Tanh", ["f"], ["y"]),
        ],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    path.write_bytes(model.SerializeToString())
    return path


def _truncated(path: Path) -> Path:
    data = (repository_path() / "digits_cnn" / MODEL_FILE_NAME).read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def test_gradify_writes_a_gradient_model_that_runs(tmp_path: Path) -> None:
    out = tmp_path / "out" / "grad.onnx"
    metadata = gradify(_good(tmp_path / "m.onnx"), out, explained="logits")
    assert list(metadata.inputs) == ["x"]
    assert metadata.explained == "logits"
    written = load_model(out)
    assert written.ir_version <= 10
    assert read_gradient_metadata(written) == metadata
    summary = summarize(written)
    assert str(summary.explained) == "logits float[batchx3]"
    assert str(summary.gradients[0]) == "mollify_gradient__x float[batchx4]"
    assert summary.weight_count == 1 and summary.weight_elements == 12
    assert [t.name for t in summary.outputs] == ["probabilities"]
    check = check_gradient_model(written, device="cpu")
    assert check.finite and check.provider == "CPUExecutionProvider" and check.bytes_per_sample > 0
    # At x = 0 the tanh slope is 1, so the gradient of sum(logits) is W's row sums.
    result = GradientSession(written)(np.zeros((1, 4), np.float32), np.ones((1, 3), np.float32))
    np.testing.assert_allclose(result.gradients[0], (np.arange(12).reshape(4, 3) / 10).sum(axis=1), rtol=1e-6)


def test_gradify_pins_symbolic_shapes(tmp_path: Path) -> None:
    source = _good(tmp_path / "m.onnx", width="features")
    gradify(source, tmp_path / "g.onnx", explained="logits", shapes={"x": (4,)})
    assert GradientSession(tmp_path / "g.onnx").input_shape == (4,)


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (_truncated, InvalidModelError, []),
        (_unsupported, UnsupportedOpError, ["Det", "the_det"]),
        (_integer_input, InvalidModelError, ["ids"]),
    ],
    ids=["truncated", "unsupported-op", "integer-input"],
)
def test_bad_models_raise_clear_errors(
    tmp_path: Path, make, error: type[Exception], words: list[str]
) -> None:  # type: ignore[no-untyped-def]
    source = make(tmp_path / "bad.onnx")
    inputs = ["ids"] if make is _integer_input else None
    with pytest.raises(error) as caught:
        gradify(source, tmp_path / "g.onnx", inputs=inputs)
    for word in words:
        assert word in str(caught.value)
    assert not (tmp_path / "g.onnx").exists()


def test_gradient_session_rejects_a_truncated_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError):
        GradientSession(_truncated(tmp_path / "bad.onnx"))


def test_cli_gradify_prints_the_summary_and_the_provider_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = repository_path() / "digits_cnn" / MODEL_FILE_NAME
    out = tmp_path / "digits.grad.onnx"
    code = main(
        [
            "gradify",
            str(source),
            "-o",
            str(out),
            "--input",
            "input",
            "--output",
            "logits",
            "--shape",
            "input=1x8x8",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.is_file()
    assert "explained  logits float[batchx10]" in captured.out
    assert "input      input float[batchx1x8x8]" in captured.out
    assert "output     probabilities float[batchx10]" in captured.out
    assert "provider   CPUExecutionProvider" in captured.out
    assert "smoke run" in captured.out and "finite" in captured.out
    assert read_gradient_metadata(onnx.load(out)).explained == "logits"


@pytest.mark.parametrize(
    ("make", "code_word"),
    [
        (_truncated, "INVALID_MODEL: "),
        (_unsupported, "UNSUPPORTED_OP: "),
        (_integer_input, "INVALID_MODEL: "),
    ],
    ids=["truncated", "unsupported-op", "integer-input"],
)
def test_cli_gradify_failures_print_code_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make,
    code_word: str,  # type: ignore[no-untyped-def]
) -> None:
    source = make(tmp_path / "bad.onnx")
    extra = ["--input", "ids"] if make is _integer_input else []
    assert main(["gradify", str(source), "-o", str(tmp_path / "g.onnx"), *extra]) == 2
    assert capsys.readouterr().err.startswith(code_word)


def test_cli_gradify_usage_and_io_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _good(tmp_path / "m.onnx")
    assert main(["gradify", str(source), "-o", str(tmp_path / "g.onnx"), "--shape", "x:4"]) == 2
    assert capsys.readouterr().err.startswith("USAGE: --shape must look like NAME=1x8x8")
    assert main(["gradify", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "g.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(("INVALID_MODEL: ", "IO_ERROR: ")) and "missing.onnx" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("input=1x8x8", ("input", (1, 8, 8))),
        ("input = 1, 8, 8", ("input", (1, 8, 8))),
        ("x=30", ("x", (30,))),
        ("a.b:0=3X4".lower(), ("a.b:0", (3, 4))),
    ],
)
def test_parse_shape(text: str, expected: tuple[str, tuple[int, ...]]) -> None:
    assert parse_shape(text) == expected
