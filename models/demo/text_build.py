"""Train and export the bundled text classifier ``review_sentiment`` and its tokenizer.

Called by ``python -m models.demo.build`` (see there). The data are the generated reviews of
:mod:`models.demo.text_data`; the tokenizer is a Hugging Face ``tokenizers`` WordLevel model
trained on the training reviews (NFKC + lowercase, whitespace/punctuation split, ``[PAD]`` = 0,
``[UNK]`` = 1, padded and truncated to :data:`SEQUENCE_LENGTH`), saved as ``tokenizer.json``.
The model is a one-block transformer encoder (token + position embeddings, two attention heads
with a padding mask, masked mean pooling, a linear head), exported with the TorchScript exporter
(inputs ``input_ids`` and ``attention_mask``, int64 ``(batch, 16)``; output ``logits``; a final
Softmax adds ``probabilities``). The explained tensor is the token-embedding lookup's output.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.config import MODEL_FILE_NAME, ModelConfig
from models.demo.text_data import LABELS, TEST_SEED, TRAIN_SEED, ReviewData, review_data
from models.export import MAX_IR_VERSION, append_softmax, save_model

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from torch import nn

__all__ = [
    "PAD_ID",
    "SEQUENCE_LENGTH",
    "TEXT_MODEL",
    "TOKENIZER_FILE_NAME",
    "build_text",
    "encode",
    "train_tokenizer",
]

TEXT_MODEL = "review_sentiment"
TOKENIZER_FILE_NAME = "tokenizer.json"
SEQUENCE_LENGTH = 16
PAD_ID = 0
_DIM = 32
_HEADS = 2


def train_tokenizer(texts: list[str]) -> Tokenizer:
    """A WordLevel tokenizer trained on ``texts``, padding and truncating to :data:`SEQUENCE_LENGTH`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"], show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.enable_padding(pad_id=PAD_ID, pad_token="[PAD]", length=SEQUENCE_LENGTH)
    tokenizer.enable_truncation(SEQUENCE_LENGTH)
    return tokenizer


def encode(tokenizer: Tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, attention_mask)``, both ``(len(texts), SEQUENCE_LENGTH)`` int64."""
    encodings = tokenizer.encode_batch(texts)
    ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask


def _modules() -> Any:
    """The classifier's module classes (defined lazily: torch belongs to the ``torch`` extra)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.out = nn.Linear(_DIM, 3 * _DIM), nn.Linear(_DIM, _DIM)
            self.norm1, self.norm2 = nn.LayerNorm(_DIM), nn.LayerNorm(_DIM)
            self.ff1, self.ff2 = nn.Linear(_DIM, 2 * _DIM), nn.Linear(2 * _DIM, _DIM)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            b, t, d = x.shape
            head = _DIM // _HEADS
            q, k, v = (p.reshape(b, t, _HEADS, head).transpose(1, 2) for p in self.qkv(x).chunk(3, -1))
            scores = q @ k.transpose(-1, -2) / math.sqrt(head) + (1.0 - mask[:, None, None, :]) * -1e4
            attended = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, t, d)
            x = self.norm1(x + self.out(attended))
            y: torch.Tensor = self.norm2(x + self.ff2(nn.functional.gelu(self.ff1(x))))
            return y

    class ReviewClassifier(nn.Module):
        """Token ids + attention mask ``(B, T)`` int64 → logits ``(B, 2)``."""

        def __init__(self, vocabulary: int) -> None:
            super().__init__()
            self.embedding = nn.Embedding(vocabulary, _DIM)
            self.position = nn.Embedding(SEQUENCE_LENGTH, _DIM)
            self.block = Block()
            self.head = nn.Linear(_DIM, len(LABELS))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            x = self.embedding(input_ids) + self.position.weight[None, : input_ids.shape[1]]
            mask = attention_mask.to(x.dtype)
            x = self.block(x, mask)
            logits: torch.Tensor = self.head((x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
            return logits

    return ReviewClassifier


def _init_parameters(module: nn.Module, generator: Any) -> None:
    """Linear layers as PyTorch initialises them, embeddings N(0, 1), all from ``generator``."""
    from torch import nn

    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            bound = 1.0 / math.sqrt(layer.weight.shape[1])
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
        elif isinstance(layer, nn.Embedding):
            nn.init.normal_(layer.weight, generator=generator)


def _train(
    module: nn.Module, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> None:
    import torch
    from torch import nn

    epochs, batch_size = 12, 64
    x, m, y = torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(labels)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    module.train()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(labels)))
        for start in range(0, len(labels), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss_fn(module(x[batch], m[batch]), y[batch]).backward()
            optimizer.step()
        scheduler.step()
    module.eval()


def _export(module: nn.Module, ids: np.ndarray, mask: np.ndarray, path: Path) -> str:
    """Export to ``path`` (with probabilities); return the token-embedding output's name."""
    import tempfile

    import onnx
    import torch

    axes = {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "logits": {0: "batch"}}
    with tempfile.TemporaryDirectory() as scratch:
        exported = Path(scratch) / MODEL_FILE_NAME
        torch.onnx.export(
            module,
            (torch.from_numpy(ids), torch.from_numpy(mask)),
            str(exported),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes=axes,
            dynamo=False,
            opset_version=17,
        )
        model = onnx.load(str(exported))
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    model.producer_name, model.producer_version = "mollify demo build", ""
    save_model(append_softmax(model), path)
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[0] == "embedding.weight" and node.input[1] == "input_ids":
            return str(node.output[0])
    raise RuntimeError("the export has no Gather looking input_ids up in embedding.weight")


def accuracy(module: nn.Module, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        predicted = module(torch.from_numpy(ids), torch.from_numpy(mask)).argmax(dim=1).numpy()
    return float(np.mean(predicted == labels))


def build_text(out: Path, seed: int) -> tuple[Path, float]:
    """Train, export and describe ``review_sentiment`` with its tokenizer. Returns (folder, accuracy).

    Call with torch on one thread (``build_all`` does) for weights that do not depend on the host.
    """
    import torch

    data: ReviewData = review_data()
    tokenizer = train_tokenizer(data.train_texts)
    train_ids, train_mask = encode(tokenizer, data.train_texts)
    test_ids, test_mask = encode(tokenizer, data.test_texts)
    module = _modules()(tokenizer.get_vocab_size())
    _init_parameters(module, torch.Generator().manual_seed(seed))
    _train(module, train_ids, train_mask, data.train_labels, np.random.default_rng(seed + 2))
    held_out = accuracy(module, test_ids, test_mask, data.test_labels)
    folder = Path(out) / TEXT_MODEL
    folder.mkdir(parents=True, exist_ok=True)
    embedding = _export(module, test_ids[:2], test_mask[:2], folder / MODEL_FILE_NAME)
    (folder / TOKENIZER_FILE_NAME).write_text(tokenizer.to_str(pretty=True) + "\n")
    config = ModelConfig(
        name=TEXT_MODEL,
        input_name="input_ids",
        input_shape=(SEQUENCE_LENGTH,),
        explained_tensor="logits",
        labels=list(LABELS),
        explained_input=embedding,
        baseline_token_id=PAD_ID,
        description=(
            f"One-block transformer (token + position embeddings, 2 heads, width {_DIM}, masked mean "
            f"pooling) on generated movie-review sentences (templates: clauses '<subject> was [not] "
            f"[very] <adjective>' joined by 'and'/'but', the clause after 'but' decides); "
            f"{tokenizer.get_vocab_size()}-word WordLevel tokenizer in {TOKENIZER_FILE_NAME}; held-out "
            f"accuracy {held_out:.4f} on {len(data.test_labels)} reviews (data seeds {TRAIN_SEED}/"
            f"{TEST_SEED}, training seed {seed}). Explained at the token-embedding output, per token."
        ),
    )
    config.save(folder)
    return folder, held_out
