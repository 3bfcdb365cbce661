"""An explained input named by the request (``ExplainRequest.explained_input``), not the config.

Small torch models (a text classifier with token + position embeddings and an attention mask, a
CNN), exported with the legacy exporter (dynamic axes, and a fixed batch of 1 whose graph reshapes
with the batch baked in), served over loopback gRPC and explained at tensors each request names;
results are compared with torch autograd and Captum's LayerIntegratedGradients.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

from estimator.method import ClassTarget, Method  # noqa: E402
from service.client import ExplainerClient, MollifyError  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.vocabulary import ExplainTarget  # noqa: E402

nn = torch.nn
VOCAB, DIM, TOKENS, CLASSES, PAD = 20, 8, 6, 3, 0
IG = Method(base="integrated_gradients", mode="none", ig_steps=16, ig_rule="gauss_legendre")
GRADIENT = Method(base="gradient", mode="none")


class TextModel(nn.Module):
    """Token ids + mask → logits; the head reads every position (a batch-shaped Reshape)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, DIM)
        self.position = nn.Embedding(TOKENS, DIM)
        self.mix = nn.Linear(DIM, DIM)
        self.head = nn.Linear(TOKENS * DIM, CLASSES)

    def after_sum(self, x: Any, mask: Any) -> Any:
        """Everything after token + position embeddings."""
        hidden = torch.tanh(self.mix(x)) * mask.to(x.dtype)[..., None]
        return self.head(hidden.reshape(hidden.shape[0], TOKENS * DIM))

    def encode(self, embedded: Any, mask: Any) -> Any:
        return self.after_sum(embedded + self.position(torch.arange(embedded.shape[1]))[None], mask)

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        return self.encode(self.embedding(input_ids), attention_mask)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 5 * 5, CLASSES)

    def features(self, x: Any) -> Any:
        return torch.relu(self.conv1(x))

    def rest(self, features: Any) -> Any:
        return self.head(torch.relu(self.conv2(features)).flatten(1))

    def forward(self, x: Any) -> Any:
        return self.rest(self.features(x))


def _ids_and_mask() -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([[5, 17, 3, 12, 0, 0], [2, 8, 14, 7, 19, 4]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1] * TOKENS], dtype=np.int64)
    return ids, mask


def _save(proto: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    proto.ir_version = min(proto.ir_version, 10)
    onnx.save(proto, str(path))
    return proto


def _export_text(model: Any, path: Path, *, fixed: bool) -> onnx.ModelProto:
    ids, mask = (torch.from_numpy(a[:1]) for a in _ids_and_mask())
    axes = (
        None if fixed else {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "logits": {0: "batch"}}
    )
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
    return _save(onnx.load(str(path)), path)


def _tensors(proto: onnx.ModelProto) -> SimpleNamespace:
    """The token embedding (Gather of embedding.weight), token + position (the Add reading it) and
    the Tanh after them."""
    nodes = list(proto.graph.node)
    token = next(n.output[0] for n in nodes if n.op_type == "Gather" and n.input[0] == "embedding.weight")
    summed = next(n.output[0] for n in nodes if n.op_type == "Add" and token in n.input)
    tanh = next(n.output[0] for n in nodes if n.op_type == "Tanh")
    return SimpleNamespace(token=token, summed=summed, tanh=tanh)


@pytest.fixture(scope="module")
def text_model() -> Any:
    torch.manual_seed(0)
    return TextModel().eval()


@pytest.fixture(scope="module")
def served(
    text_model: Any, tmp_path_factory: pytest.TempPathFactory, helpers: SimpleNamespace
) -> Iterator[SimpleNamespace]:
    root = tmp_path_factory.mktemp("request-tensors")
    work = tmp_path_factory.mktemp("exports")
    text = {
        "input_name": "input_ids",
        "input_shape": [TOKENS],
        "explained_tensor": "logits",
        "labels": ["a", "b", "c"],
        "baseline_token_id": PAD,
    }
    dynamic = _export_text(text_model, work / "dynamic.onnx", fixed=False)
    fixed = _export_text(text_model, work / "fixed.onnx", fixed=True)
    names = _tensors(dynamic)
    fixed_names = _tensors(fixed)
    # Configured at token + position embeddings (bounds given); requests name the token embedding.
    helpers.write_model(
        root,
        "text_at_sum",
        dynamic,
        **text,
        explained_input=names.summed,
        explained_lower=-6.0,
        explained_upper=6.0,
    )
    helpers.write_model(root, "text", dynamic, **text, explained_input=names.token)
    helpers.write_model(root, "text_fixed", fixed, **text, explained_input=fixed_names.token)
    torch.manual_seed(1)
    cnn = SmallCNN().eval()
    torch.onnx.export(
        cnn,
        (torch.zeros(1, 1, 5, 5),),
        str(work / "cnn.onnx"),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
        opset_version=17,
    )
    cnn_proto = _save(onnx.load(str(work / "cnn.onnx")), work / "cnn.onnx")
    relus = [n.output[0] for n in cnn_proto.graph.node if n.op_type == "Relu"]
    convs = [n.output[0] for n in cnn_proto.graph.node if n.op_type == "Conv"]
    helpers.write_model(
        root,
        "cnn",
        cnn_proto,
        input_name="image",
        input_shape=[1, 5, 5],
        explained_tensor="logits",
        lower=-3.0,
        upper=3.0,
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
        max_explained_inputs=2,
    )
    server = helpers.start_server(settings)
    try:
        with ExplainerClient(f"127.0.0.1:{server.port}", timeout=120) as client:
            yield SimpleNamespace(
                client=client,
                server=server,
                names=names,
                fixed_names=fixed_names,
                cnn=cnn,
                relus=relus,
                convs=convs,
            )
    finally:
        server.stop(0).wait()


def _layer_ig(model: Any, layer: Any, ids: np.ndarray, mask: np.ndarray, target: int) -> np.ndarray:
    """Captum's LayerIntegratedGradients at ``layer`` from the padding-token baseline, summed per token."""
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    values = captum_attr.LayerIntegratedGradients(model, layer).attribute(
        ids_t,
        baselines=torch.full_like(ids_t, PAD),
        target=target,
        additional_forward_args=(mask_t,),
        n_steps=IG.ig_steps,
        method="gausslegendre",
    )
    return np.asarray(values.detach().sum(-1).numpy(), dtype=np.float64)


def test_a_request_explains_the_token_embedding_of_a_model_configured_elsewhere(
    served: SimpleNamespace, text_model: Any
) -> None:
    ids, mask = _ids_and_mask()
    client = served.client
    configured = client.explain(
        "text_at_sum", ids, method=GRADIENT, target=ClassTarget(1), extra_inputs={"attention_mask": mask}
    )
    assert configured[0].attribution.shape == (
        TOKENS,
        DIM,
    )  # the configured tensor, not a lookup: no reduction
    results = client.explain(
        "text_at_sum",
        ids,
        method=IG,
        target=ClassTarget(1),
        extra_inputs={"attention_mask": mask},
        explained_input=served.names.token,
    )
    expected = _layer_ig(text_model, text_model.embedding, ids, mask, 1)
    for index, result in enumerate(results):
        assert result.attribution.shape == (TOKENS,)  # a lookup: per token, bounds from the table
        np.testing.assert_allclose(result.attribution, expected[index], rtol=2e-4, atol=2e-5)
    # The same tensor as another model's configured input gives the same numbers.
    reference = client.explain(
        "text", ids, method=IG, target=ClassTarget(1), extra_inputs={"attention_mask": mask}
    )
    for got, want in zip(results, reference, strict=True):
        np.testing.assert_allclose(got.attribution, want.attribution, rtol=1e-5, atol=1e-7)


def test_a_request_explains_a_conv_feature_map_with_its_bounds(served: SimpleNamespace) -> None:
    image = np.random.default_rng(0).normal(size=(2, 1, 5, 5)).astype(np.float32)
    relu = served.relus[0]
    results = served.client.explain(
        "cnn", image, method=GRADIENT, target=ClassTarget(2), lower=-10.0, upper=10.0, explained_input=relu
    )
    features = served.cnn.features(torch.from_numpy(image)).detach().requires_grad_(True)
    served.cnn.rest(features)[:, 2].sum().backward()
    for index, result in enumerate(results):
        assert result.attribution.shape == (3, 5, 5)
        np.testing.assert_allclose(result.attribution, features.grad.numpy()[index], rtol=1e-4, atol=1e-6)
    with pytest.raises(MollifyError) as caught:
        served.client.explain("cnn", image, method=GRADIENT, target=ClassTarget(2), explained_input=relu)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert "lower and upper" in str(caught.value) and repr(relu) in str(caught.value)


def test_a_fixed_batch_export_is_explained_at_its_embedding(served: SimpleNamespace, text_model: Any) -> None:
    """The export bakes batch 1 into its Reshape: prefix and suffix still run one row per call."""
    info = served.client.get_model("text_fixed")
    assert info.ready, info.error
    assert info.fixed_batch_size == 1
    ids, mask = _ids_and_mask()
    expected = _layer_ig(text_model, text_model.embedding, ids, mask, 0)
    results = served.client.explain(
        "text_fixed", ids, method=IG, target=ClassTarget(0), extra_inputs={"attention_mask": mask}
    )
    for index, result in enumerate(results):
        np.testing.assert_allclose(result.attribution, expected[index], rtol=2e-4, atol=2e-5)
    # At a tensor the request names, on the same fixed-batch graph: token + position embeddings.
    summed = served.client.explain(
        "text_fixed",
        ids,
        method=GRADIENT,
        target=ClassTarget(0),
        lower=-6.0,
        upper=6.0,
        extra_inputs={"attention_mask": mask},
        explained_input=served.fixed_names.summed,
    )
    embedded = (
        (text_model.embedding(torch.from_numpy(ids)) + text_model.position(torch.arange(TOKENS))[None])
        .detach()
        .requires_grad_(True)
    )
    text_model.after_sum(embedded, torch.from_numpy(mask))[:, 0].sum().backward()
    for index, result in enumerate(summed):
        np.testing.assert_allclose(result.attribution, embedded.grad.numpy()[index], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("tensor", "output", "words"),
    [
        (
            "no_such_tensor",
            "",
            ["'no_such_tensor'", "not a tensor of the graph", "float tensors the explained"],
        ),
        ("attention_mask", "", ["'attention_mask'", "not a tensor of the graph"]),
        ("logits", "", ["'logits'", "not upstream of the explained tensor"]),
        ("<tanh>", "<summed>", ["not upstream of the explained tensor"]),
        ("<shape>", "", ["not a float tensor", "INT64"]),
    ],
)
def test_bad_explained_inputs_in_requests_are_invalid_arguments(
    served: SimpleNamespace, tensor: str, output: str, words: list[str]
) -> None:
    names = served.names
    proto = onnx.load(str(served.server.repository.ready_entry("text").folder / "model.onnx"))
    shape = next(n.output[0] for n in proto.graph.node if n.op_type == "Shape")  # int64
    replace = {"<tanh>": names.tanh, "<summed>": names.summed, "<shape>": shape}
    tensor, output = replace.get(tensor, tensor), replace.get(output, output)
    ids, mask = _ids_and_mask()
    with pytest.raises(MollifyError) as caught:
        served.client.explain(
            "text",
            ids,
            method=GRADIENT,
            target=ExplainTarget(ClassTarget(0), output=output),
            extra_inputs={"attention_mask": mask},
            explained_input=tensor,
        )
    assert caught.value.code == "INVALID_ARGUMENT", caught.value
    for word in words:
        assert word in str(caught.value), str(caught.value)
    if "not a tensor of the graph" in words:
        assert repr(names.token) in str(caught.value)  # candidates listed, the embedding lookup first


def test_refusals_are_answered_without_reading_the_model_again(
    served: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that is no tensor of the graph, or one refused before, costs no file read or hash: a
    client repeating bad names cannot make the server re-read (or re-hash) a large model each time."""
    import service.repository as repository

    reads: list[str] = []
    real_load, real_fingerprint = repository.load_model, repository._fingerprint

    def counted_load(*args: Any, **kwargs: Any) -> Any:
        reads.append("load")
        return real_load(*args, **kwargs)

    def counted_fingerprint(*args: Any, **kwargs: Any) -> Any:
        reads.append("hash")
        return real_fingerprint(*args, **kwargs)

    monkeypatch.setattr(repository, "load_model", counted_load)
    monkeypatch.setattr(repository, "_fingerprint", counted_fingerprint)
    ids, mask = _ids_and_mask()

    def refusal(tensor: str) -> str:
        with pytest.raises(MollifyError) as caught:
            served.client.explain(
                "text",
                ids,
                method=GRADIENT,
                target=ClassTarget(0),
                extra_inputs={"attention_mask": mask},
                explained_input=tensor,
            )
        assert caught.value.code == "INVALID_ARGUMENT", caught.value
        return str(caught.value)

    first = refusal("no_such_tensor_1")
    assert "not a tensor of the graph" in first and repr(served.names.token) in first
    assert "hash" not in reads and reads.count("load") <= 1  # the candidate listing, once per version
    reads.clear()
    for attempt in range(2, 6):
        assert "not a tensor of the graph" in refusal(f"no_such_tensor_{attempt}")
    assert reads == []
    proto = onnx.load(str(served.server.repository.ready_entry("text").folder / "model.onnx"))
    shape = next(n.output[0] for n in proto.graph.node if n.op_type == "Shape")  # int64: not float
    assert "not a float tensor" in refusal(shape)
    reads.clear()
    assert refusal(shape) == refusal(shape)
    assert reads == []


def test_graphs_of_requested_tensors_are_kept_least_recently_used_first(served: SimpleNamespace) -> None:
    """``max_explained_inputs`` (2 here) bounds the graphs a model keeps for tensors requests name."""
    image = np.random.default_rng(1).normal(size=(1, 1, 5, 5)).astype(np.float32)
    entry = served.server.repository.ready_entry("cnn")
    for tensor in (*served.convs, served.relus[0], served.convs[0]):
        served.client.explain(
            "cnn",
            image,
            method=GRADIENT,
            target=ClassTarget(0),
            lower=-50.0,
            upper=50.0,
            explained_input=tensor,
        )
    assert list(entry._inputs) == [("logits", served.relus[0]), ("logits", served.convs[0])]
    first = served.client.explain(
        "cnn",
        image,
        method=GRADIENT,
        target=ClassTarget(0),
        lower=-50.0,
        upper=50.0,
        explained_input=served.convs[0],
    )
    again = served.client.explain(
        "cnn",
        image,
        method=GRADIENT,
        target=ClassTarget(0),
        lower=-50.0,
        upper=50.0,
        explained_input=served.convs[0],
    )
    np.testing.assert_array_equal(first[0].attribution, again[0].attribution)
    # Naming the configured input is the configured session.
    plain = served.client.explain(
        "cnn", image, method=GRADIENT, target=ClassTarget(0), explained_input="image"
    )
    assert plain[0].attribution.shape == (1, 5, 5)
    assert len(entry._inputs) == 2


def _adaptgrad_scale(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, confidence: float) -> np.ndarray:
    """AdaptGrad's per-feature scale (Zhou et al. 2024, AdaptGrad, Eq. 13, one-sided rule):
    ε = min(x − lower, upper − x) / Q((3 + c)/4), Q the standard normal quantile."""
    from scipy.stats import norm

    distance = np.minimum(x - lower, upper - x)
    return np.where(distance > 1e-6 * (upper - lower), distance, 0.0) / norm.ppf((3 + confidence) / 4)


@pytest.mark.parametrize("policy", ["smoothgrad", "adaptgrad"])
def test_noise_at_the_embedding_agrees_with_a_captum_noise_tunnel(
    served: SimpleNamespace, text_model: Any, policy: str
) -> None:
    """SmoothGrad (ε = α·(upper − lower) per embedding dimension, the table's bounds) and AdaptGrad
    at the token embedding vs Captum's NoiseTunnel over Saliency with the same per-feature gaussian
    scale: the tunnel perturbs u ~ N(x, 1) and the model sees x + ε·(u − x) with the gradient passed
    straight through, so it averages the gradient at x + ε·ξ, as Mollify does."""
    ids, mask = _ids_and_mask()
    info = served.client.get_model("text")
    lower, upper = np.asarray(info.lower, np.float64), np.asarray(info.upper, np.float64)
    samples, alpha = 200, 0.15
    if policy == "smoothgrad":
        method = Method(base="gradient", mode="input", scale="fixed", alpha=alpha, samples=samples)
    else:
        method = Method(base="gradient", mode="input", scale="adaptive", confidence=0.95, samples=samples)
    results = served.client.explain(
        "text", ids, method=method, target=ClassTarget(2), seed=11, extra_inputs={"attention_mask": mask}
    )
    reference_samples = 4000
    for index, result in enumerate(results):
        clean = text_model.embedding(torch.from_numpy(ids[index : index + 1])).detach()
        x = clean.numpy()[0].astype(np.float64)
        scale = (
            alpha * (upper - lower)
            if policy == "smoothgrad"
            else _adaptgrad_scale(x, lower, upper, method.confidence)
        )
        epsilon = torch.from_numpy(scale.astype(np.float32))[None]
        mask_t = torch.from_numpy(mask[index : index + 1])

        def seen(u: Any, mask_rows: Any, epsilon: Any = epsilon, clean: Any = clean) -> Any:
            noisy = (clean + epsilon * (u - clean)).detach()
            return text_model.encode(noisy + u - u.detach(), mask_rows)

        torch.manual_seed(5)
        tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(seen))
        reference = tunnel.attribute(
            clean,
            nt_type="smoothgrad",
            nt_samples=reference_samples,
            nt_samples_batch_size=500,
            stdevs=1.0,
            target=2,
            abs=False,
            additional_forward_args=(mask_t,),
        )
        expected = reference.detach().numpy()[0].astype(np.float64).sum(-1)
        assert result.attribution.shape == (TOKENS,)
        real = mask[index] == 1
        assert np.all(result.standard_error[real] > 0)
        # The tunnel's error, from the same per-sample spread over 20× the samples.
        combined = result.standard_error * np.sqrt(1 + samples / reference_samples)
        assert np.all(np.abs(result.attribution - expected) <= 4 * combined + 1e-7), (
            result.attribution,
            expected,
            result.standard_error,
        )
        assert np.all(result.attribution[~real] == 0) and np.all(expected[~real] == 0)
