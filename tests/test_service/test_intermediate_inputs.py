"""Explaining an intermediate tensor (embedding output, conv feature map) and sending extra inputs.

A small BERT-style classifier (token + position embeddings, two attention blocks with a padding
mask, masked mean pooling, a linear head) is built in torch, exported with both exporters, served
over loopback gRPC and explained at its token-embedding output; the results are compared with
Captum's LayerIntegratedGradients and a NoiseTunnel over the embedding of the same torch model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

from estimator.method import ClassTarget, Method  # noqa: E402
from service.client import ExplainerClient, MollifyError  # noqa: E402
from service.settings import Settings  # noqa: E402

nn = torch.nn
VOCAB, DIM, TOKENS, CLASSES, PAD = 30, 16, 8, 3, 0


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff1, self.ff2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x: Any, mask: Any) -> Any:
        b, t, d = x.shape
        q, k, v = (
            part.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
            for part in self.qkv(x).chunk(3, -1)
        )
        scores = q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5 + (1.0 - mask[:, None, None, :]) * -1e4
        attended = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, t, d)
        x = self.norm1(x + self.out(attended))
        return self.norm2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))


class TextClassifier(nn.Module):
    """Token ids + attention mask → logits; positions come from the ids' shape."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, DIM)
        self.position = nn.Embedding(TOKENS, DIM)
        self.blocks = nn.ModuleList([_Block(DIM, 2) for _ in range(2)])
        self.head = nn.Linear(DIM, CLASSES)

    def encode(self, embedded: Any, attention_mask: Any) -> Any:
        """Everything after the token embedding."""
        x = embedded + self.position(torch.arange(embedded.shape[1]))[None]
        mask = attention_mask.to(x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return self.head((x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        return self.encode(self.embedding(input_ids), attention_mask)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Linear(6 * 6 * 6, CLASSES)

    def features(self, x: Any) -> Any:
        return torch.relu(self.conv1(x))

    def rest(self, features: Any) -> Any:
        return self.head(torch.relu(self.conv2(features)).flatten(1))

    def forward(self, x: Any) -> Any:
        return self.rest(self.features(x))


def _ids_and_mask() -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([[5, 17, 3, 22, 9, 11, 0, 0], [2, 28, 14, 7, 19, 4, 25, 13]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1, 1, 1, 0, 0], [1] * TOKENS], dtype=np.int64)
    return ids, mask


def _export_text(model: Any, path: Path, dynamo: bool) -> onnx.ModelProto:
    ids, mask = (torch.from_numpy(a) for a in _ids_and_mask())
    if dynamo:
        batch = torch.export.Dim("batch")
        torch.onnx.export(
            model,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch}, "attention_mask": {0: batch}},
            dynamo=True,
            external_data=False,
        )
    else:
        # Legacy export with a symbolic sequence axis: positions come from Shape(input_ids).
        axes = {
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "logits": {0: "batch"},
        }
        torch.onnx.export(
            model,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes=axes,
            dynamo=False,
            opset_version=17,
        )
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, 10)
    onnx.save(proto, str(path))
    return proto


def _token_embedding(proto: onnx.ModelProto) -> str:
    """The output of the Gather looking ids up in ``embedding.weight``."""
    for node in proto.graph.node:
        if node.op_type == "Gather" and node.input[0] == "embedding.weight" and node.input[1] == "input_ids":
            return str(node.output[0])
    raise AssertionError("no token-embedding Gather in the export")


@pytest.fixture(scope="module")
def text_model() -> Any:
    torch.manual_seed(0)
    return TextClassifier().eval()


@pytest.fixture(scope="module")
def served(
    text_model: Any, tmp_path_factory: pytest.TempPathFactory, helpers: SimpleNamespace
) -> Iterator[SimpleNamespace]:
    root = tmp_path_factory.mktemp("text-repository")
    work = tmp_path_factory.mktemp("exports")
    names: dict[str, str] = {}
    for exporter, dynamo in (("legacy", False), ("dynamo", True)):
        proto = _export_text(text_model, work / f"{exporter}.onnx", dynamo)
        tensor = _token_embedding(proto)
        names[exporter] = tensor
        common = {
            "input_name": "input_ids",
            "input_shape": [TOKENS],
            "explained_tensor": "logits",
            "labels": ["a", "b", "c"],
            "explained_input": tensor,
        }
        helpers.write_model(root, f"text_{exporter}", proto, **common, baseline_token_id=PAD)
        helpers.write_model(root, f"text_{exporter}_zero", proto, **common)
    legacy = onnx.load(str(work / "legacy.onnx"))
    integer = next(n.output[0] for n in legacy.graph.node if n.op_type == "Shape")
    position = next(
        n.output[0] for n in legacy.graph.node if n.op_type == "Gather" and n.input[0] == "position.weight"
    )
    base = {
        "input_name": "input_ids",
        "input_shape": [TOKENS],
        "explained_tensor": "logits",
        "labels": ["a", "b", "c"],
    }
    helpers.write_model(root, "refuse_missing", legacy, **base, explained_input="no_such_tensor")
    helpers.write_model(root, "refuse_integer", legacy, **base, explained_input=integer)
    helpers.write_model(
        root,
        "refuse_downstream",
        legacy,
        **{**base, "explained_tensor": position},
        explained_input=names["legacy"],
    )
    torch.manual_seed(1)
    cnn = SmallCNN().eval()
    torch.onnx.export(
        cnn,
        (torch.zeros(1, 1, 6, 6),),
        str(work / "cnn.onnx"),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
        opset_version=17,
    )
    cnn_proto = onnx.load(str(work / "cnn.onnx"))
    cnn_proto.ir_version = min(cnn_proto.ir_version, 10)
    feature_map = next(n.output[0] for n in cnn_proto.graph.node if n.op_type == "Relu")
    helpers.write_model(
        root,
        "cnn_layer",
        cnn_proto,
        input_name="image",
        input_shape=[1, 6, 6],
        explained_tensor="logits",
        explained_input=feature_map,
        explained_lower=-10.0,
        explained_upper=10.0,
        labels=["a", "b", "c"],
    )
    settings = Settings(
        address="127.0.0.1:0",
        model_repository=root,
        cache_dir=tmp_path_factory.mktemp("cache"),
        device="cpu",
        intra_op_threads=1,
        memory_budget_bytes=64 << 20,
        max_evaluations=200_000,
    )
    server = helpers.start_server(settings)
    try:
        with ExplainerClient(f"127.0.0.1:{server.port}", timeout=120) as client:
            yield SimpleNamespace(client=client, cnn=cnn, feature_map=feature_map)
    finally:
        server.stop(0).wait()


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_model_info_lists_request_inputs_and_explained_tensor(served: SimpleNamespace, exporter: str) -> None:
    info = served.client.get_model(f"text_{exporter}")
    assert info.ready, info.error
    assert [(t.name, t.dtype, t.shape) for t in info.request_inputs] == [
        ("input_ids", "int64", (TOKENS,)),
        ("attention_mask", "int64", (TOKENS,)),
    ]
    assert info.explained_input is not None and info.explained_input.shape == (TOKENS, DIM)
    table = served.text_table
    np.testing.assert_array_equal(info.lower, np.broadcast_to(table.min(0), (TOKENS, DIM)))
    np.testing.assert_array_equal(info.upper, np.broadcast_to(table.max(0), (TOKENS, DIM)))


@pytest.fixture(scope="module", autouse=True)
def _table(served: SimpleNamespace, text_model: Any) -> None:
    served.text_table = text_model.embedding.weight.detach().numpy()


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("baseline", ["padding", "zero"])
def test_integrated_gradients_match_captum_layer_ig(
    served: SimpleNamespace, text_model: Any, exporter: str, baseline: str
) -> None:
    ids, mask = _ids_and_mask()
    steps = 24
    method = Method(base="integrated_gradients", mode="none", ig_steps=steps, ig_rule="gauss_legendre")
    name = f"text_{exporter}" if baseline == "padding" else f"text_{exporter}_zero"
    results = served.client.explain(
        name, ids, method=method, target=ClassTarget(1), extra_inputs={"attention_mask": mask}
    )
    layer_ig = captum_attr.LayerIntegratedGradients(text_model, text_model.embedding)
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    if baseline == "padding":
        kwargs: dict[str, Any] = {"baselines": torch.full_like(ids_t, PAD)}
    else:
        kwargs = {"baselines": None}
    expected = _layer_ig(text_model, layer_ig, ids_t, mask_t, steps, baseline == "zero", **kwargs)
    for index, result in enumerate(results):
        assert result.attribution.shape == (TOKENS,)  # per token: gradient × (input − baseline) summed
        np.testing.assert_allclose(result.attribution, expected[index], rtol=2e-4, atol=2e-5)


def _layer_ig(
    model: Any, layer_ig: Any, ids: Any, mask: Any, steps: int, zero: bool, baselines: Any
) -> np.ndarray:
    if zero:
        # A zero baseline at the layer: integrate the layer's own input from zero (Captum's
        # IntegratedGradients on the part of the model after the embedding).
        ig = captum_attr.IntegratedGradients(model.encode)
        embedded = model.embedding(ids).detach()
        values = ig.attribute(
            embedded,
            baselines=torch.zeros_like(embedded),
            target=1,
            additional_forward_args=(mask,),
            n_steps=steps,
            method="gausslegendre",
        )
    else:
        values = layer_ig.attribute(
            ids,
            baselines=baselines,
            target=1,
            additional_forward_args=(mask,),
            n_steps=steps,
            method="gausslegendre",
        )
    return np.asarray(values.detach().sum(-1).numpy(), dtype=np.float64)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_smoothgrad_at_the_embedding_agrees_with_a_noise_tunnel(
    served: SimpleNamespace, text_model: Any, exporter: str
) -> None:
    ids, mask = _ids_and_mask()
    sigma = 0.3
    method = Method(base="gradient", mode="input", scale="fixed", sigma=sigma, samples=200)
    result = served.client.explain(
        f"text_{exporter}",
        ids[:1],
        method=method,
        target=ClassTarget(2),
        seed=7,
        extra_inputs={"attention_mask": mask[:1]},
    )[0]
    assert result.attribution.shape == (TOKENS,)
    torch.manual_seed(3)
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(text_model.encode))
    embedded = text_model.embedding(torch.from_numpy(ids[:1])).detach()
    reference = tunnel.attribute(
        embedded,
        nt_type="smoothgrad",
        nt_samples=4000,
        nt_samples_batch_size=500,
        stdevs=sigma,
        target=2,
        abs=False,
        additional_forward_args=(torch.from_numpy(mask[:1]),),
    )
    expected = reference.detach().numpy()[0].sum(-1)
    # Mollify's error dominates (200 samples vs 4000): within 5 of its standard errors.
    assert np.all(np.abs(result.attribution - expected) <= 5 * result.standard_error + 1e-6), (
        result.attribution,
        expected,
        result.standard_error,
    )
    real = mask[0] == 1
    assert np.all(result.standard_error[real] > 0)
    # Masked padding tokens cannot change the output: exactly zero, as in torch.
    assert np.all(result.attribution[~real] == 0) and np.all(expected[~real] == 0)


def test_layer_attribution_at_a_conv_feature_map_matches_autograd(served: SimpleNamespace) -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 1, 6, 6)).astype(np.float32)
    results = served.client.explain(
        "cnn_layer", image, method=Method(base="gradient", mode="none"), target=ClassTarget(0)
    )
    features = served.cnn.features(torch.from_numpy(image)).detach().requires_grad_(True)
    served.cnn.rest(features)[:, 0].sum().backward()
    expected = features.grad.numpy()
    for index, result in enumerate(results):
        assert result.attribution.shape == (4, 6, 6)
        np.testing.assert_allclose(result.attribution, expected[index], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("refuse_missing", ["'no_such_tensor'", "not a tensor of the graph", "embedding"]),
        ("refuse_integer", ["not a float tensor", "INT64", "embedding"]),
        ("refuse_downstream", ["not upstream of the explained tensor"]),
    ],
)
def test_bad_explained_inputs_are_refused_precisely(
    served: SimpleNamespace, model: str, words: list[str]
) -> None:
    info = served.client.get_model(model)
    assert not info.ready
    for word in words:
        assert word in info.error, info.error
    ids, mask = _ids_and_mask()
    with pytest.raises(MollifyError) as caught:
        served.client.explain(model, ids, extra_inputs={"attention_mask": mask})
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION.name
    assert words[0] in str(caught.value)


def test_missing_or_wrong_extra_inputs_are_invalid_arguments(served: SimpleNamespace) -> None:
    ids, mask = _ids_and_mask()
    cases = [
        ({}, "attention_mask"),
        ({"attention_mask": mask, "token_type_ids": mask}, "token_type_ids"),
        ({"attention_mask": mask[:, :5]}, "extra_inputs['attention_mask'].shape"),
        ({"attention_mask": mask.astype(np.float32)}, "integer datatype"),
    ]
    for extra, word in cases:
        with pytest.raises(MollifyError) as caught:
            served.client.explain("text_legacy", ids, extra_inputs=extra)
        assert caught.value.code == "INVALID_ARGUMENT", extra
        assert word in str(caught.value)
    with pytest.raises(MollifyError) as caught:
        served.client.explain("text_legacy", np.full_like(ids, VOCAB), extra_inputs={"attention_mask": mask})
    assert caught.value.code == "INVALID_ARGUMENT" and f"[0, {VOCAB})" in str(caught.value)
    with pytest.raises(MollifyError) as caught:
        served.client.explain("text_legacy", ids.astype(np.float32), extra_inputs={"attention_mask": mask})
    assert caught.value.code == "INVALID_ARGUMENT" and "integer datatype" in str(caught.value)
