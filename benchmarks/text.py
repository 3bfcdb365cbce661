"""SmoothGrad at the token embedding of a BERT-base-sized encoder: Mollify over gRPC vs Captum.

A BERT-base-sized classifier (12 layers, 768 wide, 12 heads, 3072 feed-forward, 128 tokens, vocabulary
30 522, random weights) is exported with torch's legacy exporter, served from a temporary repository
with its token-embedding output as the explained input, and explained with SmoothGrad (σ = 0.1,
N = 50, same seed) over gRPC; Captum's NoiseTunnel(Saliency) over the embedding of the same torch
model does the same work. One instance, the two timed side by side, fastest of the repeats. A second
row times Mollify's antithetic sampler at the N that gives the same standard error as i.i.d. draws at N
(at least 20, ten pairs, for a standard error worth the name).

    PYTHONPATH=. python benchmarks/text.py [--samples 50] [--repeats 2] [--layers 12]
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))

from estimator.method import ClassTarget, Method  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from service.client import ExplainerClient  # noqa: E402
from service.server import create_server  # noqa: E402
from service.settings import Settings  # noqa: E402

TOKENS, VOCAB, CLASSES, SIGMA = 128, 30_522, 2, 0.1


def _text_module(layers: int) -> Any:
    """The BERT-style classifier of the intermediate-input tests, at BERT-base size."""
    from tests.test_service import test_intermediate_inputs as module

    module.VOCAB, module.DIM, module.TOKENS, module.CLASSES = VOCAB, 768, TOKENS, CLASSES

    class Base(module.TextClassifier):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            torch.nn.Module.__init__(self)
            self.embedding = torch.nn.Embedding(VOCAB, 768)
            self.position = torch.nn.Embedding(TOKENS, 768)
            self.blocks = torch.nn.ModuleList([_Block(768, 12) for _ in range(layers)])
            self.head = torch.nn.Linear(768, CLASSES)

    class _Block(module._Block):  # type: ignore[misc, name-defined]
        def __init__(self, dim: int, heads: int) -> None:
            torch.nn.Module.__init__(self)
            self.heads = heads
            self.qkv, self.out = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
            self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
            self.ff1, self.ff2 = torch.nn.Linear(dim, 4 * dim), torch.nn.Linear(4 * dim, dim)

    torch.manual_seed(0)
    return Base().eval()


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, (1, TOKENS), dtype=np.int64)
    mask = np.ones((1, TOKENS), dtype=np.int64)
    mask[0, 100:] = 0
    return ids, mask


def _export(model: Any, folder: Path) -> str:
    ids, mask = (torch.from_numpy(a) for a in _inputs())
    folder.mkdir(parents=True)
    path = folder / "model.onnx"
    torch.onnx.export(
        model,
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
        opset_version=17,
    )
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, 10)
    onnx.save(proto, str(path))
    embedding = next(
        n.output[0] for n in proto.graph.node if n.op_type == "Gather" and n.input[0] == "embedding.weight"
    )
    ModelConfig.from_dict(
        {
            "name": "bert_base",
            "input_name": "input_ids",
            "input_shape": [TOKENS],
            "explained_tensor": "logits",
            "explained_input": embedding,
            "labels": ["a", "b"],
        }
    ).save(folder)
    return str(embedding)


def _captum(model: Any, samples: int) -> float:
    from captum.attr import NoiseTunnel, Saliency

    ids, mask = (torch.from_numpy(a) for a in _inputs())
    started = time.perf_counter()
    embedded = model.embedding(ids).detach()
    tunnel = NoiseTunnel(Saliency(lambda e: model.encode(e, mask.expand(e.shape[0], -1))))
    tunnel.attribute(embedded, nt_type="smoothgrad", nt_samples=samples, stdevs=SIGMA, target=1, abs=False)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument(
        "--memory-budget", type=int, default=2048, help="MiB per explanation (server setting)"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = _text_module(args.layers)
    ids, mask = _inputs()
    with tempfile.TemporaryDirectory() as work:
        root = Path(work) / "models"
        _export(model, root / "bert_base")
        settings = Settings(
            address="127.0.0.1:0",
            model_repository=root,
            cache_dir=Path(work) / "cache",
            device="cpu",
            intra_op_threads=2,
            max_concurrent_requests=1,
            max_evaluations=1_000_000,
            max_message_bytes=64 << 20,
            memory_budget_bytes=args.memory_budget << 20,
        )
        server, port = create_server(settings)
        server.start()
        try:
            with ExplainerClient(f"127.0.0.1:{port}", timeout=600) as client:
                info = client.get_model("bert_base")
                assert info.ready, info.error

                def mollify(n: int = args.samples, sampler: str = "iid") -> tuple[float, float]:
                    """Seconds for one explanation, and the norm of its per-token standard error."""
                    started = time.perf_counter()
                    (explanation,) = client.explain(
                        "bert_base",
                        ids,
                        method=Method(samples=n, sigma=SIGMA, sampler=sampler),  # type: ignore[arg-type]
                        target=ClassTarget(1),
                        seed=0,
                        extra_inputs={"attention_mask": mask},
                    )
                    return time.perf_counter() - started, float(np.linalg.norm(explanation.standard_error))

                # Both sides are warmed at the full N: a server answers many requests, and the
                # first ones at a new batch size grow ONNX Runtime's memory arena.
                mollify()
                _captum(model, args.samples)
                times: dict[str, list[float]] = {"mollify": [], "captum": []}
                errors: dict[str, float] = {}
                for _ in range(args.repeats):
                    seconds, errors["iid"] = mollify()
                    times["mollify"].append(seconds)
                    times["captum"].append(_captum(model, args.samples))
                # Equal error: the antithetic sampler's standard error at N, scaled to the N it needs
                # to match the i.i.d. error at N (the error of a mean falls as 1/sqrt(N)).
                _, errors["antithetic"] = mollify(args.samples, "antithetic")
                needed = max(
                    20, 2 * math.ceil(args.samples * (errors["antithetic"] / errors["iid"]) ** 2 / 2)
                )
                times["antithetic"] = [mollify(needed, "antithetic")[0] for _ in range(args.repeats)]
                rss_small = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                mollify(4 * args.samples)
                rss_large = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        finally:
            server.stop(0).wait()
    best = {name: min(values) for name, values in times.items()}
    print(
        f"BERT-base-sized encoder ({args.layers} layers, 768 wide, {TOKENS} tokens), SmoothGrad at the token "
        f"embedding, σ = {SIGMA}, fastest of {args.repeats} after a warm-up at N = {args.samples}"
    )
    print("| Mollify over gRPC | Captum NoiseTunnel(Saliency) | Mollify / Captum | peak RSS N=4·N vs N |")
    print("|---|---|---|---|")
    print(
        f"| {best['mollify']:.2f} s (N = {args.samples}) | {best['captum']:.2f} s (N = {args.samples}) | "
        f"{best['mollify'] / best['captum']:.2f} | {rss_large / rss_small:.2f} (process, torch included) |"
    )
    print(
        f"| {best['antithetic']:.2f} s (antithetic, N = {needed}, standard error ≤ i.i.d. at N = {args.samples}) | "
        f"{best['captum']:.2f} s (N = {args.samples}) | {best['antithetic'] / best['captum']:.2f} | |"
    )
    print(
        f"standard error norm at N = {args.samples}: i.i.d. {errors['iid']:.3g}, antithetic {errors['antithetic']:.3g}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
