"""Export a PyTorch module to ONNX and build its gradient graph.

PyTorch is an optional dependency (the ``torch`` extra): it is imported inside the functions,
so importing this module costs nothing where torch is absent. The forward model is exported,
never autograd code (exported autograd graphs are wrong or fail); the gradient graph
is then derived from the ONNX graph by :func:`models.gradient_graph.build_gradient_model`.
Imports onnx, numpy and (lazily) torch; never onnxruntime.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper

from models.gradient_graph.external_data import save_model as _save_with_data

if TYPE_CHECKING:
    import torch

__all__ = [
    "MAX_IR_VERSION",
    "ExportError",
    "append_softmax",
    "export_torch_module",
    "export_torch_onnx",
    "save_model",
]

# onnx 1.23 writes IR 14; onnxruntime 1.31 reads at most 13, and IR 10 covers opset 21.
MAX_IR_VERSION = 10


class ExportError(ValueError):
    """The module cannot be exported as asked (bad argument, or the exporter failed)."""


def export_torch_onnx(
    module: torch.nn.Module,
    example_input: torch.Tensor | np.ndarray,
    *,
    input_name: str = "input",
    output_names: Sequence[str] = ("logits",),
    dynamo: bool = True,
    opset: int = 18,
) -> onnx.ModelProto:
    """Export the forward pass of ``module`` to a plain ONNX model with a dynamic batch dimension.

    Args:
        module: a module with one tensor argument; it is exported in eval mode and left in the
            mode it was in.
        example_input: ``(B, *input_shape)`` float tensor or array. With ``dynamo=True`` a batch of
            1 is repeated to 2, because ``torch.export`` specialises size-1 dimensions.
        input_name: name of the ONNX graph input.
        output_names: names of the ONNX graph outputs, one per module output.
        dynamo: ``True`` uses the ``torch.export`` based exporter, ``False`` the legacy TorchScript one.
        opset: default-domain opset to export to.

    Returns:
        The model with ``ir_version`` at most :data:`MAX_IR_VERSION` and batch dimension ``"batch"``.
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not output_names:
        raise ExportError("output_names must name at least one output, got an empty sequence")
    example = _example_tensor(example_input, dynamo=dynamo)
    was_training = module.training
    module.eval()
    try:
        if dynamo:
            model = _export_dynamo(module, example, input_name, list(output_names), opset)
        else:
            model = _export_legacy(module, example, input_name, list(output_names), opset)
    finally:
        module.train(was_training)
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    return model


def export_torch_module(
    module: torch.nn.Module,
    example_input: torch.Tensor | np.ndarray,
    path: str | os.PathLike[str] | None = None,
    *,
    input_name: str = "input",
    output_names: Sequence[str] = ("logits",),
    dynamo: bool = True,
    opset: int = 18,
    explained: str | None = None,
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Export ``module`` and build the gradient graph of ``explained`` with respect to its input.

    Args:
        module, example_input, input_name, output_names, dynamo, opset: as for :func:`export_torch_onnx`.
        path: when given, the plain model is written to ``path`` and the gradient model beside it
            with the suffix ``.grad.onnx`` (``model.onnx`` → ``model.grad.onnx``), each by
            :func:`save_model` (a model over ``external_data.INLINE_LIMIT_BYTES`` gets its weights in
            ``<file>.data``; the returned model then references that file).
        explained: the tensor whose cotangent is given; default: the first output.

    Returns:
        ``(original, gradient)``: the exported forward model and the model built by
        :func:`models.gradient_graph.build_gradient_model` (gradient output per sample,
        input shape pinned to the example's non-batch dimensions).
    """
    from models.gradient_graph import build_gradient_model

    original = export_torch_onnx(
        module, example_input, input_name=input_name, output_names=output_names, dynamo=dynamo, opset=opset
    )
    shape = tuple(int(d) for d in np.shape(example_input)[1:])
    gradient = build_gradient_model(original, [input_name], explained, input_shapes={input_name: shape})
    gradient.ir_version = min(gradient.ir_version, MAX_IR_VERSION)
    if path is not None:
        target = Path(path)
        save_model(original, target)
        save_model(gradient, gradient_path(target))
    return original, gradient


def gradient_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`export_torch_module` writes the gradient model for a plain model at ``path``."""
    target = Path(path)
    return target.with_name(f"{target.stem}.grad{target.suffix or '.onnx'}")


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` to ``path``, creating parent folders; return ``path``.

    One self-contained file, unless the model is larger than
    ``models.gradient_graph.external_data.INLINE_LIMIT_BYTES`` (protobuf cannot write 2 GB): its
    tensors of 1 KiB and more then go to ``<file>.data`` beside it, where ``model`` references
    them from then on (moved, not copied). ``load_model(path)`` and the server read both layouts.
    """
    written = _save_with_data(model, path)
    return written[-1]


def append_softmax(
    model: onnx.ModelProto,
    logits: str = "logits",
    probabilities: str = "probabilities",
    axis: int = -1,
) -> onnx.ModelProto:
    """Return a copy of ``model`` whose output ``logits`` is replaced by ``Softmax(logits)``.

    The logits tensor keeps its name, so it stays addressable as the explained tensor (an
    intermediate once this returns); the new output is named ``probabilities``.

    Args:
        model: a model with a float graph output named ``logits``.
        logits: the graph output to pass through Softmax.
        probabilities: the name of the new graph output.
        axis: the Softmax axis (opset ≥ 13 semantics: one axis, not a flattened tail).
    """
    opset = _default_opset(model)
    if opset < 13:
        raise ExportError(f"append_softmax needs default-domain opset >= 13, the model has {opset}")
    result = onnx.ModelProto()
    result.CopyFrom(model)
    outputs = list(result.graph.output)
    position = next((i for i, out in enumerate(outputs) if out.name == logits), None)
    if position is None:
        names = [out.name for out in outputs]
        raise ExportError(f"logits must name a graph output, got {logits!r}; outputs are {names}")
    logits_info = outputs[position]
    result.graph.node.append(
        helper.make_node("Softmax", [logits], [probabilities], name=f"{probabilities}_softmax", axis=axis)
    )
    output = onnx.ValueInfoProto()
    output.CopyFrom(logits_info)
    output.name = probabilities
    del result.graph.output[:]
    result.graph.output.extend(outputs[:position] + [output] + outputs[position + 1 :])
    result.graph.value_info.append(logits_info)
    return result


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ExportError("the model imports no default-domain opset")


def _example_tensor(example_input: Any, *, dynamo: bool) -> torch.Tensor:
    import torch

    example = torch.as_tensor(
        np.asarray(example_input) if isinstance(example_input, np.ndarray) else example_input
    )
    if not torch.is_floating_point(example):
        raise ExportError(f"example_input must be a float tensor, got dtype {example.dtype}")
    if example.ndim < 1 or example.shape[0] < 1:
        raise ExportError(
            f"example_input must have a batch dimension of size >= 1, got shape {tuple(example.shape)}"
        )
    if dynamo and example.shape[0] == 1:
        example = example.repeat(2, *([1] * (example.ndim - 1)))
    return example.detach()


def _export_dynamo(
    module: torch.nn.Module, example: torch.Tensor, input_name: str, output_names: list[str], opset: int
) -> onnx.ModelProto:
    import torch

    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.onnx.export(
            module,
            (example,),
            input_names=[input_name],
            output_names=output_names,
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
        )
    except Exception as err:
        raise ExportError(f"the dynamo exporter failed for {type(module).__name__}: {err}") from err
    if program is None:
        raise ExportError("the dynamo exporter returned no program")
    model = program.model_proto
    _name_batch_dimension(model, input_name, output_names)
    return model


def _export_legacy(
    module: torch.nn.Module, example: torch.Tensor, input_name: str, output_names: list[str], opset: int
) -> onnx.ModelProto:
    import torch

    axes = {name: {0: "batch"} for name in [input_name, *output_names]}
    with tempfile.TemporaryDirectory(prefix="mollify-export-") as folder:
        path = Path(folder) / "model.onnx"
        try:
            # Choosing the legacy exporter is deliberate here; its deprecation notice is noise.
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(
                    module,
                    (example,),
                    path,
                    input_names=[input_name],
                    output_names=output_names,
                    opset_version=opset,
                    dynamo=False,
                    dynamic_axes=axes,
                )
        except Exception as err:
            raise ExportError(f"the legacy exporter failed for {type(module).__name__}: {err}") from err
        return onnx.load(path)


def _name_batch_dimension(model: onnx.ModelProto, input_name: str, output_names: list[str]) -> None:
    """Rename the exporter's symbol for the batch axis (``s0``, ``batch``...) to ``"batch"`` everywhere."""
    graph = model.graph
    symbol = None
    for value in graph.input:
        if value.name == input_name and value.type.tensor_type.shape.dim:
            first = value.type.tensor_type.shape.dim[0]
            symbol = first.dim_param if first.HasField("dim_param") else None
    if not symbol:
        return
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param == symbol:
                dim.dim_param = "batch"
