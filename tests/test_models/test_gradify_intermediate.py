"""``mollify gradify --input TENSOR`` with a tensor computed inside the graph (layer attribution).

A small text classifier (token ids + attention mask; token + position embeddings, a masked
mixing layer, a head over every position) is exported by torch, gradified at its token-embedding
output, and the written gradient model is run in ONNX Runtime against torch autograd of the part
of the model after the embedding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from models.gradient_graph import read_gradient_metadata  # noqa: E402
from models.runtime import ForwardSession  # noqa: E402
from service.cli import main  # noqa: E402

nn = torch.nn
VOCAB, DIM, TOKENS, CLASSES = 20, 8, 6, 3


class TextModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, DIM)
        self.position = nn.Embedding(TOKENS, DIM)
        self.mix = nn.Linear(DIM, DIM)
        self.head = nn.Linear(TOKENS * DIM, CLASSES)

    def encode(self, embedded: Any, mask: Any) -> Any:
        """Everything after the token embedding."""
        x = embedded + self.position(torch.arange(embedded.shape[1]))[None]
        hidden = torch.tanh(self.mix(x)) * mask.to(x.dtype)[..., None]
        return self.head(hidden.reshape(hidden.shape[0], TOKENS * DIM))

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        return self.encode(self.embedding(input_ids), attention_mask)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, str]:
    torch.manual_seed(0)
    model = TextModel().eval()
    path = tmp_path_factory.mktemp("gradify-cut") / "text.onnx"
    ids, mask = torch.zeros(1, TOKENS, dtype=torch.int64), torch.ones(1, TOKENS, dtype=torch.int64)
    torch.onnx.export(
        model,
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamo=False,
        opset_version=17,
        dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "logits": {0: "batch"}},
    )
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, 10)
    onnx.save(proto, str(path))
    token = next(
        n.output[0] for n in proto.graph.node if n.op_type == "Gather" and n.input[0] == "embedding.weight"
    )
    return model, path, token


def test_gradify_at_the_embedding_matches_autograd_of_the_rest(
    exported: tuple[Any, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, path, token = exported
    out = tmp_path / "grad.onnx"
    assert main(["gradify", str(path), "-o", str(out), "--input", token, "--output", "logits"]) == 0
    printed = capsys.readouterr().out
    assert f"input      {token} float[batch" in printed, printed
    gradient = onnx.load(str(out))
    metadata = read_gradient_metadata(gradient)
    assert list(metadata.inputs) == [token] and metadata.explained == "logits"
    weights = {init.name for init in gradient.graph.initializer}
    fed = {value.name for value in gradient.graph.input if value.name not in weights}
    assert fed == {token, "attention_mask", metadata.cotangent}  # the ids are no longer read
    rng = np.random.default_rng(0)
    embedded = rng.normal(size=(3, TOKENS, DIM)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0, 0], [1] * TOKENS, [1, 1, 1, 1, 1, 0]], dtype=np.int64)
    cotangent = rng.normal(size=(3, CLASSES)).astype(np.float32)
    session = ForwardSession(str(out), device="cpu")
    results = session.run(
        {token: embedded, "attention_mask": mask, metadata.cotangent: cotangent},
        ["logits", metadata.gradients[token]],
    )
    leaf = torch.from_numpy(embedded).requires_grad_(True)
    logits = model.encode(leaf, torch.from_numpy(mask))
    (logits * torch.from_numpy(cotangent)).sum().backward()
    np.testing.assert_allclose(results["logits"], logits.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[metadata.gradients[token]], leaf.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_gradify_refuses_integer_and_mixed_intermediate_inputs(
    exported: tuple[Any, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, path, token = exported
    proto = onnx.load(str(path))
    shape = next(n.output[0] for n in proto.graph.node if n.op_type == "Shape")
    cases = [
        ([shape], ["INVALID_MODEL", repr(shape), "not a float tensor", repr(token)]),
        (["no_such_tensor"], ["INVALID_MODEL", "'no_such_tensor'", "not a tensor of the graph"]),
        ([token, "input_ids"], ["INVALID_MODEL", "differentiated alone"]),
    ]
    for inputs, words in cases:
        argv = ["gradify", str(path), "-o", str(tmp_path / "bad.onnx"), "--output", "logits"]
        for name in inputs:
            argv += ["--input", name]
        assert main(argv) == 2
        error = capsys.readouterr().err
        for word in words:
            assert word in error, error
